"""What ``model.dtype`` means: the compute precision, over fp32 master weights (mixed precision).

``model.dtype=bfloat16`` keeps the parameters and the optimizer state in fp32 and runs the forward
passes — training, log π_i, and the in-process rollout engine — under ``torch.autocast`` in bf16,
as the field does (PyTorch AMP, FSDP2's ``MixedPrecisionPolicy``, verl, TRL). Updating bf16
parameters directly would round away every step smaller than half a bf16 ulp: one AdamW step at
lr 1e-6 changed 1.9% of a tiny model's weights in bf16 against all of them in fp32 (NOTES.md).
An engine that holds its own copy of the weights (vLLM) may hold them in bf16.

``float16`` training is refused at config load: it needs loss scaling to keep small gradients from
flushing to zero, which longrl does not do; bf16 has fp32's exponent range and needs none.
``float64`` stores and computes in float64 (exact checks in tests).
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = ("float32", "bfloat16", "float16", "float64")


def master_dtype(dtype: str) -> str:
    """The dtype the trained parameters and the optimizer state are kept in for compute ``dtype``."""
    return "float64" if dtype == "float64" else "float32"


def autocast_dtype(dtype: str) -> torch.dtype | None:
    """The autocast dtype of compute ``dtype``, or None when the forward runs in the parameters' dtype."""
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)


def compute_context(dtype: torch.dtype | None, device: torch.device | str):
    """``torch.autocast`` to ``dtype`` on ``device``'s kind, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    kind = torch.device(device).type
    return torch.autocast(device_type=kind, dtype=dtype)



def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them.

    Called on the policy when ``rl.activation_checkpointing`` is on, by whoever builds the trained
    module: the single-process trainer (``longrl.train.loop.train``), the Ray trainer worker and the
    FSDP wrapper. Each layer then keeps its ``length x hidden`` input instead of every intermediate
    (attention projections, the 4x-wide MLP, norms), for about one more forward of the decoder per
    backward; log-probs and gradients are unchanged (tests/test_activation_checkpointing.py). Uses
    transformers' ``gradient_checkpointing_enable`` with non-reentrant checkpointing, which PyTorch
    recommends and which needs no input that requires grad.

    transformers checkpoints a layer only while the layer is in training mode, and the RL update
    runs in eval mode (``policy_forward``), so that context re-arms the layers with
    :func:`keep_checkpointing_in_eval`. Generation is unaffected: the engine samples in eval mode
    with gradients off, where nothing is checkpointed and the KV cache is kept.
    """
    from longrl.errors import UserError

    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UserError(
            f"rl.activation_checkpointing=true: the model class {type(model).__name__} does not support "
            "activation checkpointing (transformers' gradient_checkpointing_enable); set it to false"
        )
    for layer in _checkpoint_layers(model):
        if "self.training" in _forward_source(layer):
            raise UserError(
                f"rl.activation_checkpointing=true: {type(layer).__name__} applies dropout in its own forward, "
                "which the eval-mode RL update would switch on under checkpointing; set it to false"
            )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def keep_checkpointing_in_eval(model) -> None:
    """Put the checkpointed decoder layers of ``model`` back in training mode after ``model.eval()``.

    Only the layers' own flag, which transformers reads to decide whether to checkpoint: their
    submodules (attention, MLP, dropout) stay in eval mode, so the forward computes exactly what it
    computes without checkpointing (:func:`enable_activation_checkpointing` refuses layers whose
    own forward reads the flag). A no-op for a model without checkpointing. Called by
    ``longrl.train.update.policy_forward``; ``model.train(mode)`` undoes it.
    """
    for layer in _checkpoint_layers(model):
        if layer.gradient_checkpointing:
            layer.training = True


def _checkpoint_layers(model) -> list:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def _forward_source(layer) -> str:
    import inspect

    try:
        return inspect.getsource(type(layer).forward)
    except (OSError, TypeError):  # no source to read (compiled or generated class): nothing to refuse
        return ""
