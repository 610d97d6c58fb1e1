"""FSDP2 sharding of the Ray trainer group (``cluster.sharding=fsdp``).

Each trainer worker loads the policy, then :func:`shard_model` applies PyTorch FSDP2's
``fully_shard`` to every decoder layer and then to the root: every parameter becomes a DTensor
sharded on dim 0 over the ranks, and so do its gradient and the AdamW moments made over it, so a
rank holds about 1/world of the training state (``bench/fsdp.py``). A layer's full weights exist
only between its all-gather and its reshard. FSDP2 shards each parameter, not whole layers, so
any rank count works, more ranks than decoder layers included (a dimension smaller than the world
is padded); only the per-rank saving shrinks.

The update is the single-process one, through the same :func:`longrl.train.update.iteration_update`;
:class:`ShardedDataParallel` is the ``dp`` it is given, and differs from the replicated
:class:`~longrl.train.update.DataParallel` in three hooks:

- ``reduce_grads`` does nothing: FSDP reduce-scatters each micro-batch's gradient in its backward,
  and :func:`shard_model` makes that a SUM (``set_gradient_divide_factor(1.0)`` with sum-only
  collectives) — the loss is already divided by the global mini-batch denominator, and FSDP's
  default average would halve the gradient at two ranks;
- ``lockstep`` makes every rank run as many micro-batch forwards (and backwards) as the busiest
  one: each is a collective under FSDP, and ranks may hold different numbers of micro-batches;
- ``logprobs`` runs :func:`longrl.train.batch.token_logprobs` as an FSDP forward of the root, whose
  own parameters (embeddings, final norm, a tied LM head) must be gathered around the whole pass:
  ``token_logprobs`` calls the base model and the head separately, not ``model.forward``.

The gradient norm is clipped with ``torch.nn.utils.clip_grad_norm_`` on the DTensor gradients, which
returns the global norm.

Checkpoints: :func:`save_shards` has every rank write its own shard of the weights with
``torch.distributed.checkpoint`` (DCP) into ``iter_N/sharded/`` (``longrl.train.checkpoint``), and
:func:`load_shards` reads them back into a freshly sharded model of any rank count: DCP reshards on
load, so a 2-rank checkpoint resumes into 1 rank or 4.
"""

from __future__ import annotations

import types
from pathlib import Path

import torch

from longrl.errors import UserError
from longrl.train.batch import model_device, token_logprobs
from longrl.train.update import DataParallel


def decoder_layers(model) -> list[torch.nn.Module]:
    """The repeated blocks each sharded on their own: the base model's ``layers`` (Llama, Qwen, Mistral...)."""
    layers = getattr(model.get_decoder(), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise UserError(f"cluster.sharding=fsdp: cannot find the decoder layers of {type(model).__name__} "
                        "(expected model.get_decoder().layers); use cluster.sharding=replicate")
    return list(layers)


def shard_model(model, cluster) -> None:
    """``fully_shard`` each decoder layer, then the root, over the default process group, in place.

    ``cluster.reshard_after_forward`` frees a decoder layer's gathered weights after its forward
    (gathered again for the backward: less memory, one more all-gather per layer); ``cluster.mixed_precision``
    gathers and computes in bf16 and reduces gradients in fp32 over fp32 master weights. Call
    after ``model`` is on its device and after any activation checkpointing is enabled.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        FSDPModule,
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    mesh = init_device_mesh(model_device(model).type, (dist.get_world_size(),))
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if cluster.mixed_precision else MixedPrecisionPolicy())
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, reshard_after_forward=cluster.reshard_after_forward, mp_policy=mp)
    # the root's own parameters stay gathered from its forward to its backward (FSDP2's default for the
    # root, which needs them again at once); they must, since token_logprobs reads them after the base model
    fully_shard(model, mesh=mesh, mp_policy=mp)
    for m in model.modules():
        if isinstance(m, FSDPModule):  # sum over ranks, never average (see the module docstring)
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)
    model.longrl_logprobs = types.MethodType(lambda self, batch, temperature: token_logprobs(self, batch, temperature),
                                             model)
    register_fsdp_forward_method(model, "longrl_logprobs")


def sync_units(model) -> list[list[str]]:
    """Parameter names (tied weights once) grouped as the weight sync gathers them: one decoder
    layer per unit, then the root's own parameters (embeddings, final norm, LM head)."""
    names = {id(p): n for n, p in model.named_parameters()}
    units = [[names[id(p)] for p in layer.parameters()] for layer in decoder_layers(model)]
    in_layers = {n for u in units for n in u}
    return units + [[n for n in names.values() if n not in in_layers]]


def gather_unit(model, names: list[str], keep: bool) -> dict[str, torch.Tensor]:
    """The full tensors of ``names`` on the CPU (``keep``) or an empty dict after taking part.

    ``full_tensor()`` is an all-gather: every rank calls this with the same names in the same order.
    """
    params = dict(model.named_parameters())
    out = {}
    for n in names:
        full = params[n].detach().full_tensor()
        if keep:
            out[n] = full.cpu()
        del full
    return out


def save_shards(model, folder: Path) -> None:
    """This rank's shard of ``model``'s weights into ``folder`` (DCP: one ``__RANK_0.distcp`` file per
    rank, and ``.metadata`` from rank 0, each fsynced). A collective: every rank calls it with the same
    folder, which must be one folder for all of them (on several nodes, a shared filesystem).

    The weights only: the k1.5 update makes a fresh optimizer at the start of every iteration
    (:func:`longrl.train.update.fresh_optimizer`), so there is no optimizer state to keep.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    dcp.save(get_model_state_dict(model), checkpoint_id=str(folder))


def load_shards(model, folder: Path) -> None:
    """Load the weights :func:`save_shards` wrote, by any number of ranks, into ``model``'s own shards
    (a collective, as the save). Also loads them into a plain, unsharded module in a process without
    torch.distributed (DCP then assembles the full tensors)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    state = get_model_state_dict(model)
    dcp.load(state, checkpoint_id=str(folder))
    set_model_state_dict(model, state)


class ShardedDataParallel(DataParallel):
    """The ``dp`` of an FSDP-sharded trainer worker: three hooks differ from :class:`DataParallel`."""

    def reduce_grads(self, model, bucket_bytes: int = 0) -> None:
        """Nothing to do: FSDP has reduce-scattered (summed) every micro-batch's gradient in its backward."""

    def lockstep(self, n: int) -> int:
        """The most micro-batches any rank holds: every rank runs that many forwards and backwards."""
        return int(self.all_reduce(torch.tensor(n), "max"))

    def logprobs(self, model, batch, temperature: float) -> torch.Tensor:
        from torch.distributed.fsdp import FSDPModule

        logp = model.longrl_logprobs(batch, temperature)
        if not torch.is_grad_enabled():
            # no backward will reshard what this forward gathered (the root's parameters; every layer's
            # with reshard_after_forward=false): reshard now, or a forward after the next optimizer step
            # would reuse the stale gathered weights (measured: log pi_i recomputed, then 2 steps, went 1e-3 off)
            for m in model.modules():
                if isinstance(m, FSDPModule):
                    m.reshard()
        return logp
