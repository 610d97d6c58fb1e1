"""Turning sequences into training tensors, and policy log-probs.

Sequences are length-bucketed into micro-batches (sorted by length, cut at a token budget) and
right-padded only to the longest sequence of their micro-batch, never to the global maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Seq:
    """One training sequence: ``ids = prompt + response``; the loss covers ``ids[loss_start:]``.

    ``ref_logp`` (optional) holds log π_i for the loss tokens, ``len(ids) - loss_start`` values.
    """

    ids: list[int]
    loss_start: int
    advantage: float = 0.0
    ref_logp: list[float] | None = None
    index: int = 0  # position in the caller's list, to map results back


@dataclass
class TrainBatch:
    """A micro-batch. Built by :func:`micro_batches`, read by the trainer and :func:`token_logprobs`.

    Shapes (``b`` sequences, ``L`` = longest sequence in this micro-batch):
      input_ids       int64 [b, L]    right-padded with ``pad_id``
      attention_mask  int64 [b, L]    1 on real tokens
      loss_mask       float [b, L-1]  1 where target ``input_ids[:, t+1]`` is a loss token
      ref_logp        float [b, L-1]  log π_i of each target (0 outside the loss mask)
      advantages      float [b]
      index           int64 [b]       position of each row in the caller's sequence list
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    ref_logp: torch.Tensor
    advantages: torch.Tensor
    index: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device) -> TrainBatch:
        return TrainBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.loss_mask,
                                                    self.ref_logp, self.advantages, self.index)))


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def micro_batch_budget(tokens: int | None, device: torch.device) -> int:
    """Padded tokens per forward/backward: ``tokens`` when set, else a default for the device.

    On a CPU, micro-batches of ~2k tokens keep a small model's activations in cache: the RL update
    of the quickstart and of ``bench/rl_step.py`` runs 25-30% faster than with 8k (for the
    quickstart's SFT steps the difference is within noise). A GPU wants larger ones to fill the device.
    """
    if tokens is not None:
        return tokens
    return 2048 if device.type == "cpu" else 8192


def micro_batches(seqs: Sequence[Seq], max_tokens: int, pad_id: int, device=None) -> list[TrainBatch]:
    """Length-bucket ``seqs`` into micro-batches of at most ``max_tokens`` padded tokens each,
    on ``device`` (the model's: see :func:`model_device`) when given."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].ids))
    groups: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = max(len(seqs[i].ids), max((len(seqs[j].ids) for j in cur), default=0))
        if cur and longest * (len(cur) + 1) > max_tokens:
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    batches = [_collate([seqs[i] for i in g], pad_id) for g in groups]
    return batches if device is None else [b.to(device) for b in batches]


def _collate(seqs: list[Seq], pad_id: int) -> TrainBatch:
    b, L = len(seqs), max(len(s.ids) for s in seqs)
    ids = torch.full((b, L), pad_id, dtype=torch.int64)
    attn = torch.zeros((b, L), dtype=torch.int64)
    loss_mask = torch.zeros((b, L - 1))
    ref = torch.zeros((b, L - 1), dtype=torch.float64)  # sequence sums of log pi_i must not depend on padding
    for r, s in enumerate(seqs):
        n = len(s.ids)
        ids[r, :n] = torch.tensor(s.ids)
        attn[r, :n] = 1
        loss_mask[r, s.loss_start - 1 : n - 1] = 1.0  # target t+1 in [loss_start, n)
        if s.ref_logp is not None:
            ref[r, s.loss_start - 1 : n - 1] = torch.tensor(s.ref_logp)
    return TrainBatch(ids, attn, loss_mask, ref,
                      torch.tensor([s.advantage for s in seqs], dtype=torch.float32),
                      torch.tensor([s.index for s in seqs], dtype=torch.int64))


def token_logprobs(model, batch: TrainBatch, temperature: float = 1.0) -> torch.Tensor:
    """log π(input_ids[:, t+1] | input_ids[:, :t+1]) of logits / temperature: ``[b, L-1]``."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # log-softmax in at least fp32
    if temperature != 1.0:
        logits = logits / temperature
    targets = batch.input_ids[:, 1:]
    picked = logits.gather(-1, targets[..., None]).squeeze(-1)
    return (picked - torch.logsumexp(logits, dim=-1)) * batch.loss_mask
