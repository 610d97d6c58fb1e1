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
