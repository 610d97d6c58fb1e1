"""Turning sequences into training tensors, and policy log-probs.

Sequences are length-bucketed into micro-batches (sorted by length, cut at a token budget) and
right-padded only to the longest sequence of their micro-batch, never to the global maximum.
A sequence of an image prompt carries the prompt's pixel inputs (``Seq.mm``); they travel with
its micro-batch and go back into the model with the ids (DESIGN §7b), with the same position ids
the ``hf`` engine used (:func:`longrl.models.vision.mm_positions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from longrl.models.vision import concat_mm, mm_forward_kwargs, mm_positions, placeholder_token_ids


@dataclass
class Seq:
    """One training sequence: ``ids = prompt + response``; the loss covers ``ids[loss_start:]``.

    ``ref_logp`` (optional) holds log π_i for the loss tokens, ``len(ids) - loss_start`` values.
    ``mm`` is the prompt's pixel inputs (``GenRequest.mm``, the same dict the engine took, or a
    :class:`~longrl.models.vision.LazyPixels` that computes them when the batch is built), None for
    a text-only prompt; ``ids`` are then the processor-expanded ids.
    """

    ids: list[int]
    loss_start: int
    advantage: float = 0.0
    ref_logp: list[float] | None = None
    index: int = 0  # position in the caller's list, to map results back
    mm: Mapping[str, torch.Tensor] | None = None


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
      mm              the rows' ``Seq.mm`` joined along dim 0 in row order (rows without images add
                      nothing; :func:`longrl.models.vision.concat_mm`), None when no row has images
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    ref_logp: torch.Tensor
    advantages: torch.Tensor
    index: torch.Tensor
    mm: dict[str, torch.Tensor] | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device) -> TrainBatch:
        mm = None if self.mm is None else {k: v.to(device) for k, v in self.mm.items()}
        return TrainBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.loss_mask,
                                                    self.ref_logp, self.advantages, self.index)), mm=mm)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def trainable(model) -> list[torch.nn.Parameter]:
    """The weights an optimizer steps: all but frozen ones (``model.freeze_vision_tower``)."""
    return [p for p in model.parameters() if p.requires_grad]


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
                      torch.tensor([s.index for s in seqs], dtype=torch.int64),
                      concat_mm([s.mm for s in seqs]))


# Logits are computed for at most this many elements (tokens x vocabulary) at a time: 2^27 fp32 values
# are 512 MiB, ~880 tokens of a 152k vocabulary; the tiny model's 384-token vocabulary takes 350k
# tokens a chunk (one chunk in practice).
LOGIT_CHUNK_ELEMENTS = 1 << 27


def token_logprobs(model, batch: TrainBatch, temperature: float = 1.0,
                   chunk_elements: int = LOGIT_CHUNK_ELEMENTS) -> torch.Tensor:
    """log π(input_ids[:, t+1] | input_ids[:, :t+1]) of logits / temperature: ``[b, L-1]``, float32
    (float64 for a float64 model), 0 outside ``batch.loss_mask``.

    Only the loss positions get logits: the backbone's last hidden states are gathered at those
    positions and sent through the LM head in chunks of ``chunk_elements`` logits, each under
    activation checkpointing, so neither the forward nor the backward holds a ``b × L × V`` tensor
    (8k tokens at a 152k vocabulary would be 5 GB per fp32 copy). The log-softmax is in fp32 whatever
    the compute dtype. Models whose causal-LM head is not ``get_output_embeddings()`` applied to
    the base model's last hidden state (logit soft-capping, scaled logits) are detected once, on a
    short slice of the first batch, and take the full forward instead. The base model
    (``model.base_model``) is the language model's body for a text model and the whole
    vision-language body (vision tower, projector, language model) for a VLM, so pixel inputs
    (``batch.mm``) enter the same way in both paths. A VLM's image placeholder tokens are left out
    of the softmax, as the ``hf`` engine never samples them (:func:`placeholder_token_ids`).
    """
    mask = batch.loss_mask.bool()
    ids, attn = batch.input_ids, batch.attention_mask
    inputs = dict(input_ids=ids, attention_mask=attn, position_ids=mm_positions(model, ids, attn, batch.mm),
                  use_cache=False, **mm_forward_kwargs(model, ids, batch.mm))
    banned = placeholder_token_ids(model)
    if not _head_is_separable(model, batch):
        logits = model(**inputs).logits
        return _gather_logprobs(logits[:, :-1][mask], batch.input_ids[:, 1:][mask], temperature,
                                mask, lambda x: x, banned=banned)
    hidden = model.base_model(**inputs).last_hidden_state[:, :-1]
    return _gather_logprobs(hidden[mask], batch.input_ids[:, 1:][mask], temperature, mask,
                            model.get_output_embeddings(), chunk_elements, banned)


def _gather_logprobs(rows: torch.Tensor, targets: torch.Tensor, temperature: float, mask: torch.Tensor,
                     head, chunk_elements: int = LOGIT_CHUNK_ELEMENTS,
                     banned: Sequence[int] = ()) -> torch.Tensor:
    """``head(rows)`` → log-prob of ``targets`` (``[N, H]``, ``[N]`` → ``[N]``), scattered into the
    ``[b, L-1]`` positions of ``mask``; chunked over N, each chunk recomputed in the backward. Token
    ids in ``banned`` get no probability mass."""
    from torch.utils.checkpoint import checkpoint

    def chunk_logp(h: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        logits = head(h)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # log-softmax in fp32 at least
        if temperature != 1.0:
            logits = logits / temperature
        if banned:
            logits = logits.index_fill(-1, torch.tensor(banned, device=logits.device), float("-inf"))
        return logits.gather(-1, tgt[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    vocab = getattr(head, "out_features", None) or rows.shape[-1]
    step = max(1, chunk_elements // max(int(vocab), 1))
    parts = []
    for i in range(0, rows.shape[0], step):
        h, tgt = rows[i : i + step], targets[i : i + step]
        if torch.is_grad_enabled() and h.requires_grad and step < rows.shape[0]:
            parts.append(checkpoint(chunk_logp, h, tgt, use_reentrant=False))
        else:
            parts.append(chunk_logp(h, tgt))
    dtype = torch.promote_types(rows.dtype, torch.float32)
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    if not parts:  # no loss token in this micro-batch: a zero that still carries the graph
        return out + rows.sum().to(dtype) * 0.0
    return out.masked_scatter(mask, torch.cat(parts).to(dtype))


def _head_is_separable(model, batch: TrainBatch) -> bool:
    """Whether ``get_output_embeddings()(base_model(x).last_hidden_state)`` gives the model's own
    logits; checked once per model on the first row of a batch (up to 16 tokens, ids only: a VLM's
    base model runs its language model alone then, the path its hidden states take to the head),
    then cached."""
    cached = getattr(model, "_longrl_head_separable", None)
    if cached is not None:
        return cached
    ok = False
    try:
        body, head = model.base_model, model.get_output_embeddings()
        if body is not model and head is not None:
            n = int(batch.attention_mask[0].sum().clamp(max=16))
            ids = batch.input_ids[:1, :n]
            was_training = model.training
            model.eval()  # no dropout: both passes must be deterministic
            try:
                with torch.no_grad():
                    want = model(input_ids=ids, use_cache=False).logits.float()
                    got = head(body(input_ids=ids, use_cache=False).last_hidden_state).float()
            finally:
                model.train(was_training)
            ok = got.shape == want.shape and torch.allclose(got, want, atol=1e-3, rtol=1e-3)
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        ok = False
    model._longrl_head_separable = ok
    return ok
