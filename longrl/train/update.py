"""The policy update of one RL iteration, on one process or data-parallel over several.

:func:`policy_update` is the optimization loop of k1.5 mirror descent (fresh optimizer, epochs ×
mini-batches, a fixed denominator per mini-batch). It runs unchanged in the single-process
trainer and in each worker of a Ray trainer group: every rank sees the same shuffled mini-batches,
takes every ``world``-th sequence of each, and the gradients are summed across ranks before the
step. Each rank's loss is already divided by the *global* mini-batch denominator, so the summed
gradient is the single-process gradient (up to floating-point summation order), and the clipped
step is identical on every rank — DDP's semantics, written out so that ranks may hold different
numbers of micro-batches. An FSDP-sharded group (``cluster.sharding=fsdp``) runs this same code
with the ``dp`` of :mod:`longrl.distributed.fsdp`, whose hooks (``reduce_grads``, ``lockstep``,
``logprobs``) let FSDP sum the gradients and keep the ranks' collectives in step.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from longrl.algo import get_algorithm
from longrl.config import RunConfig
from longrl.models.precision import autocast_dtype, compute_context, keep_checkpointing_in_eval
from longrl.train.batch import Seq, micro_batch_budget, micro_batches, model_device, token_logprobs, trainable


@dataclass
class UpdateStats:
    loss: float = 0.0
    grad_norm: float = 0.0
    delta_abs: float = 0.0  # mean |log pi_theta - log pi_i| per sequence at the last step
    steps: int = 0
    lr: float = 0.0  # the learning rate of this iteration's steps
    tokens: int = 0
    offpolicy_gap: float = 0.0  # partial rollouts: mean |recorded - current log pi| over older-policy tokens
    mismatch_sum: float = 0.0  # |log pi_train - log pi_rollout| summed over compared tokens ...
    mismatch_max: float = 0.0
    mismatch_tokens: int = 0  # ... tokens sampled by pi_i itself, compared before any step

    def note_mismatch(self, logp: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> None:
        gap = (logp - ref).abs() * mask
        self.mismatch_sum += float(gap.sum())
        self.mismatch_max = max(self.mismatch_max, float(gap.max())) if gap.numel() else self.mismatch_max
        self.mismatch_tokens += int(mask.sum())


class DataParallel:
    """This process's place in a data-parallel group; ``group=None`` is a single process."""

    def __init__(self, group=None):
        import torch.distributed as dist

        self.group = group
        self.rank = dist.get_rank(group) if group is not None else 0
        self.world = dist.get_world_size(group) if group is not None else 1

    def shard(self, items: list) -> list:
        return items[self.rank :: self.world]

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=self.group)
        return t

    def reduce_grads(self, model, bucket_bytes: int = 64 << 20) -> None:
        """Sum gradients over ranks in flat buckets (as DDP does), so the step is the global one."""
        if self.world == 1:
            return
        params = trainable(model)
        used = self.all_reduce(torch.tensor([p.grad is not None for p in params], dtype=torch.int32))
        params = [p for p, u in zip(params, used.tolist()) if u]  # no rank's gradient: stays None, as in one process
        for p in params:
            if p.grad is None:  # a rank with no tokens this step still takes part in the reduction
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []
        size = 0
        for p in params + [None]:
            if p is not None:
                bucket.append(p.grad)
                size += p.grad.numel() * p.grad.element_size()
            if bucket and (p is None or size >= bucket_bytes):
                flat = torch.cat([g.reshape(-1) for g in bucket])
                self.all_reduce(flat)
                offset = 0
                for g in bucket:
                    g.copy_(flat[offset : offset + g.numel()].view_as(g))
                    offset += g.numel()
                bucket, size = [], 0

    def lockstep(self, n: int) -> int:
        """How many micro-batch passes this rank runs when it holds ``n``: ``n`` here, where ranks only meet
        in :meth:`reduce_grads`; the sharded ``dp`` (``longrl.distributed.fsdp``) returns the most any rank holds."""
        return n

    def logprobs(self, model, batch, temperature: float) -> torch.Tensor:
        """One forward of the policy (:func:`token_logprobs`); the sharded ``dp`` runs it as an FSDP forward."""
        return token_logprobs(model, batch, temperature)

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj, group=self.group)
        return out


@contextmanager
def policy_forward(model, dtype: str):
    """The mode of every forward pass of the RL update and of log π_i: eval mode and ``dtype``'s autocast.

    Eval mode turns dropout off (as TRL's ``disable_dropout`` and the DPO path here): with dropout a
    checkpoint such as GPT-2's would see noisy log-probs, and Δ ≠ 0 at the first step. It is also
    the mode the hf engine samples in, so the recorded log-probs and the trainer's use the same
    kernels. Gradients flow as in train mode.
    """
    was_training = model.training
    model.eval()
    keep_checkpointing_in_eval(model)  # rl.activation_checkpointing: transformers checkpoints in train mode only
    try:
        with compute_context(autocast_dtype(dtype), model_device(model)):
            yield
    finally:
        model.train(was_training)


def iteration_lr(rl, iteration: int) -> float:
    """The learning rate of ``iteration``: ``rl.lr``, or a cosine from it to ``rl.lr_final`` over the run."""
    if rl.lr_final is None:
        return rl.lr
    frac = min(iteration / max(rl.iterations - 1, 1), 1.0)
    return rl.lr_final + 0.5 * (rl.lr - rl.lr_final) * (1 + math.cos(math.pi * frac))


def response_lr_scale(cfg: RunConfig, responses: int) -> float:
    """The factor ``rl.lr_per_response`` puts on an iteration's learning rate: its trained responses
    over a full batch (``batch_prompts x k``), so that with a fixed number of steps per iteration a
    smaller batch (partial rollouts) moves the weights proportionally less. 1 with ``rl.mini_batch_size``,
    whose step count already follows the batch."""
    rl = cfg.rl
    if not rl.lr_per_response or rl.mini_batch_size:
        return 1.0
    return responses / (cfg.rollout.batch_prompts * cfg.rollout.k)


def fresh_optimizer(model, rl, lr: float) -> torch.optim.Optimizer:
    """The optimizer of one iteration, created anew each time (k1.5 resets its state).

    With AdamW and no state, the first step is ``lr * sign(g)`` for every weight whose gradient is
    well above Adam's eps (m / sqrt(v) = ±1), however small and noisy that gradient; ``sgd`` steps
    along the gradient itself, with a learning rate on a different scale (see ``RLConfig.optimizer``).
    """
    if rl.optimizer == "sgd":
        return torch.optim.SGD(trainable(model), lr=lr, weight_decay=rl.weight_decay)
    return torch.optim.AdamW(trainable(model), lr=lr, weight_decay=rl.weight_decay, betas=(0.9, 0.95))


def policy_update(model, seqs: list[Seq], cfg: RunConfig, iteration: int, pad_id: int,
                  dp: DataParallel | None = None, note_mismatch: bool = True, lr_scale: float = 1.0) -> UpdateStats:
    """Reset the optimizer, then epochs x mini-batches of steps on the summed-log-prob loss.

    The denominator of each mini-batch is (its sequences) x H, H = ``rl.horizon`` or the max
    response length (the sequence count alone for a per-sequence token-mean loss: grpo,
    ``rl.token_mean``), fixed before the micro-batch loop: the gradient depends neither on the
    micro-batch split nor on the number of ranks. Summed log-probs weight long responses more (as
    in the paper); dividing by a fixed H only rescales the learning rate, so the gradient norm is
    clipped and logged. ``seqs`` must carry log π_i in ``ref_logp``; with ``note_mismatch`` the
    first mini-batch (before any step, when the policy *is* π_i) measures the gap between the
    trainer's log-probs and those recorded by the engine.
    """
    dp = dp or DataParallel()
    rl = cfg.rl
    stats = UpdateStats(lr=iteration_lr(rl, iteration) * lr_scale)
    if not seqs:
        return stats
    opt = fresh_optimizer(model, rl, stats.lr)
    rng = random.Random(f"update-{cfg.seed}-{iteration}")  # the same order on every rank
    delta_sum = delta_n = 0.0
    for _ in range(rl.epochs):
        order = list(range(len(seqs)))
        rng.shuffle(order)
        steps = -(-len(order) // rl.mini_batch_size) if rl.mini_batch_size else rl.mini_batches
        for mb in np.array_split(np.array(order), min(steps, len(order))):
            total, delta_sum, delta_n = batch_gradient(model, [seqs[i] for i in mb], cfg, pad_id, dp, stats,
                                                       note_mismatch and stats.steps == 0)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), rl.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            stats.steps += 1
            stats.grad_norm = float(norm)
            stats.loss = total
    sums = dp.all_reduce(torch.tensor([delta_sum, delta_n, stats.tokens, stats.mismatch_sum,
                                       stats.mismatch_tokens], dtype=torch.float64))
    stats.delta_abs = float(sums[0] / max(sums[1], 1))
    stats.tokens, stats.mismatch_sum, stats.mismatch_tokens = int(sums[2]), float(sums[3]), int(sums[4])
    stats.mismatch_max = float(dp.all_reduce(torch.tensor(stats.mismatch_max, dtype=torch.float64), "max"))
    return stats


def batch_gradient(model, mb_seqs: list[Seq], cfg: RunConfig, pad_id: int, dp: DataParallel,
                   stats: UpdateStats, note_mismatch: bool = False) -> tuple[float, float, int]:
    """Accumulate the gradient of one mini-batch's loss into ``.grad``, summed over all ranks.

    The loss is divided by ``len(mb_seqs) x H`` (the whole mini-batch, not this rank's share), H the
    horizon where the loss sums over tokens; a loss that is already a per-sequence token mean (grpo,
    ``rl.token_mean``) is divided by the sequence count only.
    Returns (the mini-batch loss, the sum and count of per-sequence |log pi - log pi_i|).
    """
    rl = cfg.rl
    algo = get_algorithm(rl.algorithm)
    sums_tokens = algo.per_sequence_horizon and not rl.token_mean
    denom = len(mb_seqs) * ((rl.horizon or cfg.rollout.max_length) if sums_tokens else 1)
    local = dp.shard(mb_seqs)
    total = torch.zeros((), dtype=torch.float64)
    delta_sum, delta_n = 0.0, 0
    dev = model_device(model)
    budget = micro_batch_budget(rl.micro_batch_tokens, dev)
    batches = micro_batches(local, budget, pad_id, dev) if local else []
    for _ in range(dp.lockstep(len(batches)) - len(batches)):  # sharded: the passes other ranks run
        idle_pass(model, mb_seqs[0], cfg, pad_id, dp, backward=True)
    for b in batches:
        with policy_forward(model, cfg.model.dtype):
            logp = dp.logprobs(model, b, cfg.rollout.temperature)
        if note_mismatch:
            stats.note_mismatch(logp.detach(), b.ref_logp, b.loss_mask)
        loss = algo.loss(logp, b.ref_logp, b.loss_mask, b.advantages, tau=rl.tau, clip_eps=rl.clip_eps,
                         token_mean=rl.token_mean) / denom
        loss.backward()
        total += loss.detach().cpu()
        stats.tokens += b.num_tokens
        with torch.no_grad():
            delta = ((logp - b.ref_logp) * b.loss_mask).sum(-1).abs()
            delta_sum += float(delta.sum())
            delta_n += delta.numel()
    dp.reduce_grads(model)
    return float(dp.all_reduce(total)), delta_sum, delta_n


def idle_pass(model, seq: Seq, cfg: RunConfig, pad_id: int, dp: DataParallel, backward: bool) -> None:
    """A forward (and a backward) of ``seq`` that changes nothing: its loss has weight 0, so it adds
    exact zeros to the gradients and nothing to the statistics. Run by a rank with fewer micro-batches
    than its peers when every pass is a collective (FSDP: each layer's all-gather and reduce-scatter)."""
    dev = model_device(model)
    (b,) = micro_batches([seq], len(seq.ids), pad_id, dev)
    with torch.set_grad_enabled(backward), policy_forward(model, cfg.model.dtype):
        logp = dp.logprobs(model, b, cfg.rollout.temperature)
    if backward:
        (logp.sum() * 0.0).backward()


@torch.no_grad()
def recompute_reference(model, seqs: list[Seq], versions: dict[int, list[int]], cfg: RunConfig,
                        iteration: int, pad_id: int, dp: DataParallel | None = None) -> UpdateStats:
    """Replace each sequence's ``ref_logp`` by the current policy's log-probs (log π_i).

    Needed when the recorded log-probs are not π_i's own: tokens from older policies (partial
    rollouts) or an engine other than the trainer's module (vLLM). ``versions[s.index]`` is the
    policy version of each loss token of ``s``. Returns the mean gap on older-policy tokens
    (``offpolicy_gap``) and the train/inference mismatch on tokens sampled by π_i itself.
    """
    dp = dp or DataParallel()
    stats = UpdateStats()
    by_index = {s.index: s for s in seqs}
    fresh: dict[int, list[float]] = {}
    old_sum, old_n = 0.0, 0
    mine = dp.shard(seqs)
    dev = model_device(model)
    batches = micro_batches(mine, micro_batch_budget(cfg.rl.micro_batch_tokens, dev), pad_id, dev) if mine else []
    for _ in range(dp.lockstep(len(batches)) - len(batches)):
        idle_pass(model, seqs[0], cfg, pad_id, dp, backward=False)
    for b in batches:
        # the update's own mode and precision, so that at its first step log pi_theta equals log pi_i exactly
        with policy_forward(model, cfg.model.dtype):
            logp = dp.logprobs(model, b, cfg.rollout.temperature).cpu()
        for row, idx in enumerate(b.index.tolist()):
            s = by_index[idx]
            new = logp[row, s.loss_start - 1 : len(s.ids) - 1]
            old = torch.tensor(s.ref_logp, dtype=new.dtype)
            current = torch.tensor([v == iteration for v in versions[idx]], dtype=torch.bool)
            gap = (new - old).abs()
            old_sum += float(gap[~current].sum())
            old_n += int((~current).sum())
            stats.note_mismatch(new[current], old[current], torch.ones(int(current.sum())))
            fresh[idx] = new.tolist()
    for part in dp.gather(fresh):
        for idx, ref in part.items():
            by_index[idx].ref_logp = ref
    sums = dp.all_reduce(torch.tensor([old_sum, old_n, stats.mismatch_sum, stats.mismatch_tokens],
                                      dtype=torch.float64))
    stats.offpolicy_gap = float(sums[0] / sums[1]) if sums[1] else 0.0
    stats.mismatch_sum, stats.mismatch_tokens = float(sums[2]), int(sums[3])
    stats.mismatch_max = float(dp.all_reduce(torch.tensor(stats.mismatch_max, dtype=torch.float64), "max"))
    return stats


def iteration_update(model, seqs: list[Seq], versions: dict[int, list[int]], cfg: RunConfig, iteration: int,
                     pad_id: int, recompute: bool, dp: DataParallel | None = None,
                     lr_scale: float = 1.0) -> UpdateStats:
    """One iteration's update: log π_i recomputed when asked (see :func:`recompute_reference`), then
    :func:`policy_update`. The mismatch figures come from whichever pass compared engine and trainer."""
    ref = recompute_reference(model, seqs, versions, cfg, iteration, pad_id, dp) if recompute and seqs else None
    stats = policy_update(model, seqs, cfg, iteration, pad_id, dp, note_mismatch=not recompute, lr_scale=lr_scale)
    if ref is not None:
        stats.offpolicy_gap = ref.offpolicy_gap
        stats.mismatch_sum, stats.mismatch_max, stats.mismatch_tokens = (
            ref.mismatch_sum, ref.mismatch_max, ref.mismatch_tokens)
    return stats
