"""The ``hf`` rollout engine: batched sampling with a KV cache on any transformers causal LM.

Sampling is Gumbel-max with *counter-based* noise: the noise for token ``v`` at response
position ``t`` of a request with seed ``s`` is a hash of ``(s, t, v)``. A sample therefore depends
only on its own seed and the model, never on the batch it shares or on how generation was split —
so a trajectory continued from a saved prefix (partial rollouts) is token-for-token the one an
uninterrupted generation would have produced, and results do not change with the batch size.

Log-probs are of the sampling distribution: ``log_softmax(logits / T)`` restricted to the top-p
nucleus and renormalised; with ``T = 0`` decoding is greedy and log-probs are of the raw logits.
Finished rows are dropped from the batch (and from the KV cache) as soon as they stop, so a batch
with a long tail does not keep paying for its finished samples.

Image prompts (``GenRequest.mm``) go through the prefill only, with the positions of
:func:`longrl.models.vision.mm_positions` (three rows for Qwen2-VL's M-RoPE); decode steps take the
previous position + 1 and no pixel inputs. A VLM's image placeholder tokens are never sampled
(:func:`longrl.models.vision.placeholder_token_ids`; the trainer's log-probs leave them out too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from longrl.models.precision import compute_context
from longrl.models.vision import concat_mm, mm_forward_kwargs, mm_positions, placeholder_token_ids
from longrl.rollout.repetition import RepeatDetector
from longrl.types import GenRequest, GenResult, SamplingParams

_M32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (lowbias32) on int64 tensors; only the low 32 bits are used."""
    x = x & _M32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _M32
    x = ((x ^ (x >> 15)) * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def counter_uniform(seeds: torch.Tensor, positions: torch.Tensor, vocab: int) -> torch.Tensor:
    """Uniform(0, 1) noise of shape ``[B, vocab]`` from per-row seeds and positions (int64 ``[B]``)."""
    s = _hash32(_hash32(seeds >> 32) ^ seeds)
    row = _hash32(s ^ ((positions * 0x9E3779B9) & _M32))
    cols = torch.arange(vocab, dtype=torch.int64, device=seeds.device)
    u = _hash32(row[:, None] + cols[None, :] * 0x85EBCA6B)
    return (u.to(torch.float64) + 0.5) / 4294967296.0


def sample_next(logits: torch.Tensor, params: SamplingParams, seeds: torch.Tensor,
                positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the next token per row; return ``(tokens [B], logprobs [B])``.

    ``logits`` is ``[B, V]`` float. The log-prob is of the distribution the token was drawn from.
    """
    logits = logits.float()
    if params.temperature == 0:
        logp = torch.log_softmax(logits, dim=-1)
        tok = logits.argmax(dim=-1)
        return tok, logp.gather(1, tok[:, None]).squeeze(1)
    logp = torch.log_softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_lp, order = logp.sort(dim=-1, descending=True)
        cum = sorted_lp.exp().cumsum(dim=-1)
        drop_sorted = cum - sorted_lp.exp() >= params.top_p  # keep the smallest set with mass >= p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logp = torch.log_softmax(logp.masked_fill(drop, float("-inf")), dim=-1)
    gumbel = -torch.log(-torch.log(counter_uniform(seeds, positions, logits.shape[-1])))
    tok = (logp.double() + gumbel).argmax(dim=-1)
    return tok, logp.gather(1, tok[:, None]).squeeze(1)


class _PreallocatedLayer(DynamicLayer):
    """A full-attention KV cache layer written in place into buffers, not concatenated per step.

    transformers' ``DynamicLayer`` concatenates the cache at every decode step, copying all of it:
    O(length²) bytes per sample, a sixth of a small model's decode time on a CPU. Here each step
    writes its new keys and values into a ``[B, H, capacity, D]`` buffer, and the attention reads a
    view of the filled part. The buffer starts at ``capacity`` (the prompt plus a first stretch of
    the response, not the longest possible sample) and doubles when full, up to ``max_capacity``
    (the longest possible sample), so a growing sample holds at most twice its filled length, and
    never more than the longest one needs. Dropping finished rows copies only the filled part of
    the rows kept.
    """

    def __init__(self, capacity: int, max_capacity: int | None = None):
        super().__init__()
        self.capacity = capacity
        self.max_capacity = max_capacity
        self.filled = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._k = key_states.new_empty((*key_states.shape[:2], self.capacity, key_states.shape[-1]))
        self._v = value_states.new_empty((*value_states.shape[:2], self.capacity, value_states.shape[-1]))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.filled + key_states.shape[-2]
        if end > self._k.shape[-2]:
            grown = 2 * self._k.shape[-2]
            if self.max_capacity is not None:
                grown = min(grown, self.max_capacity)
            self._k, self._v = (self._copy(t, capacity=max(end, grown)) for t in (self._k, self._v))
        self._k[:, :, self.filled : end] = key_states
        self._v[:, :, self.filled : end] = value_states
        self.filled = end
        self._expose()
        return self.keys, self.values

    def _copy(self, buf: torch.Tensor, capacity: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        src = buf[:, :, : self.filled] if rows is None else buf[rows, :, : self.filled]
        out = buf.new_empty((src.shape[0], buf.shape[1], capacity, buf.shape[-1]))
        out[:, :, : self.filled] = src
        return out

    def _expose(self) -> None:
        self.keys, self.values = self._k[:, :, : self.filled], self._v[:, :, : self.filled]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices`` (repeats allowed: each copy gets its own memory)."""
        if self.is_initialized:
            self._k, self._v = (self._copy(t, t.shape[-2], indices) for t in (self._k, self._v))
            self._expose()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            rows = torch.arange(self._k.shape[0], device=self._k.device).repeat_interleave(repeats)
            self.batch_select_indices(rows)

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last ``-tokens_to_remove`` tokens; a positive value is the length to keep
        (transformers' deprecated form)."""
        keep = tokens_to_remove if tokens_to_remove > 0 else self.filled + tokens_to_remove
        if self.is_initialized and keep < self.filled:
            self.filled = max(0, keep)
            self._expose()

    def reset(self) -> None:
        self.filled = 0
        self._k = self._v = None
        super().reset()

    def offload(self):
        raise NotImplementedError("the hf engine's KV cache stays on the model's device")

    prefetch = offload


FIRST_STRETCH = 256  # response tokens the KV buffers hold before they first grow


def _kv_cache(model, prompt_len: int, max_new: int) -> DynamicCache:
    """The model's own dynamic cache, its full-attention layers written in place: buffers of
    ``prompt_len + min(max_new, FIRST_STRETCH)`` tokens growing to at most ``prompt_len + max_new``
    (sliding-window and other layer kinds are left as transformers builds them)."""
    cache = DynamicCache(config=model.config)
    first, most = prompt_len + min(max_new, FIRST_STRETCH), prompt_len + max_new
    cache.layers = [_PreallocatedLayer(first, most) if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]
    return cache


def _context_keys(reqs: list[GenRequest]) -> list[tuple]:
    """What makes two requests the same context for the shared prefill: their ids and a digest of
    their pixel inputs (identical ids with different images are different contexts). The k requests
    of a prompt share one ``mm`` dict, so each distinct dict is hashed once."""
    digests: dict[int, tuple] = {}

    def digest(mm: dict[str, torch.Tensor]) -> tuple:
        if id(mm) not in digests:
            digests[id(mm)] = tuple((k, tuple(v.shape), str(v.dtype), hashlib.blake2b(
                v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()).digest())
                for k, v in sorted(mm.items()))
        return digests[id(mm)]

    return [(tuple(r.prompt_ids), digest(r.mm) if r.mm else None) for r in reqs]


class HFEngine:
    """In-process transformers engine; shares the policy module with the trainer (no copy).

    ``model`` is any ``AutoModelForCausalLM``; ``eos_ids`` end a sample; ``pad_id`` fills the
    left padding. ``max_batch`` bounds the number of sequences decoded together. ``autocast`` (e.g.
    ``torch.bfloat16``) runs the forward passes under ``torch.autocast``, as the trainer's are with
    ``model.dtype=bfloat16`` over fp32 master weights, so recorded log-probs are the trainer's numbers.
    """

    def __init__(self, model, eos_ids: Iterable[int], pad_id: int, max_batch: int = 256,
                 autocast: torch.dtype | None = None):
        self.model = model
        self.eos_ids = torch.tensor(sorted(set(eos_ids)), dtype=torch.int64)
        self.pad_id = pad_id
        self.max_batch = max_batch
        self.autocast = autocast
        self.banned = torch.tensor(placeholder_token_ids(model), dtype=torch.int64)

    # -- protocol ------------------------------------------------------------------------------

    def generate(self, requests: list[GenRequest], params: SamplingParams) -> list[GenResult]:
        out: list[GenResult | None] = [None] * len(requests)
        for idx in self._batches([len(r.prompt_ids) for r in requests]):
            for i, res in zip(idx, self._generate_batch([requests[i] for i in idx], params)):
                out[i] = res
        return out  # type: ignore[return-value]

    def _batches(self, lens: list[int], slack: int = 2048) -> list[list[int]]:
        """Request indices in decoding batches of similar context length.

        Contexts are left-padded to the longest of their batch, and the prefill pays for the
        padding. Continued partial rollouts (prompt + hundreds of tokens) beside fresh prompts
        would multiply the prefill several times, so a batch is cut when its padding would exceed
        half its real tokens (plus ``slack`` tokens, so small batches are not split for nothing).
        Results do not depend on the grouping: sampling noise is per request.
        """
        batches: list[list[int]] = []
        cur: list[int] = []
        real = 0
        for i in sorted(range(len(lens)), key=lambda i: lens[i]):
            n = lens[i]  # ascending: the longest so far
            if cur and (len(cur) == self.max_batch or (len(cur) + 1) * n > 1.5 * (real + n) + slack):
                batches.append(cur)
                cur, real = [], 0
            cur.append(i)
            real += n
        if cur:
            batches.append(cur)
        return batches

    def update_weights(self, named_tensors) -> None:
        """Copy tensors into the model in place (a no-op when the trainer shares this module)."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, t in named_tensors:
                if params[name].data_ptr() != t.data_ptr():
                    params[name].copy_(t)

    def sleep(self) -> None:  # nothing separate to release: the engine is the trainer's module
        pass

    def wake(self) -> None:
        pass

    # -- internals -----------------------------------------------------------------------------

    @torch.no_grad()
    def _generate_batch(self, reqs: list[GenRequest], params: SamplingParams) -> list[GenResult]:
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with compute_context(self.autocast, next(model.parameters()).device):
                return self._decode(reqs, params)
        finally:
            model.train(was_training)

    def _decode(self, reqs: list[GenRequest], params: SamplingParams) -> list[GenResult]:
        model = self.model
        dev = next(model.parameters()).device
        B = len(reqs)
        lens = torch.tensor([len(r.prompt_ids) for r in reqs])
        if int(lens.min()) == 0:
            raise ValueError("a generation request has an empty prompt")
        T = int(lens.max())
        ids = torch.full((B, T), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((B, T), dtype=torch.int64)
        for b, r in enumerate(reqs):
            ids[b, T - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[b, T - len(r.prompt_ids) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        seeds = torch.tensor([r.seed if r.seed is not None else b for b, r in enumerate(reqs)],
                             dtype=torch.int64, device=dev)
        pos_offset = torch.tensor([r.response_offset for r in reqs], dtype=torch.int64, device=dev)
        max_new = torch.tensor([r.max_new_tokens for r in reqs], device=dev)
        eos_ids = self.eos_ids.to(dev)
        banned = self.banned.to(dev)
        tokens: list[list[int]] = [[] for _ in range(B)]
        logps: list[list[float]] = [[] for _ in range(B)]
        stop: list[str] = ["max_length"] * B
        alive = torch.arange(B, device=dev)  # original row of each row still in the batch
        detector = None
        if params.repeat_max_period > 0:  # earlier segments of a continued sample count too
            detector = RepeatDetector(params.repeat_max_period, params.repeat_window,
                                      [r.prompt_ids[len(r.prompt_ids) - r.response_offset:] for r in reqs])
        cache = _kv_cache(model, T, int(max_new.max()))
        # Prefill each distinct context once (the k samples of a prompt share it), then give
        # every request its own copy of the cache rows.
        first: dict[tuple, int] = {}
        src = torch.tensor([first.setdefault(k, b) for b, k in enumerate(_context_keys(reqs))], device=dev)
        rows = torch.tensor(list(first.values()), device=dev)  # ascending: first occurrences in order
        mm = concat_mm([reqs[b].mm for b in first.values()])
        # Positions have the batch at dim -2 ([B, T], or [3, B, T] for M-RoPE): rows are picked with
        # [..., rows, :] and a decode step's position is the row's previous one + 1.
        positions = mm_positions(model, ids[rows], mask[rows], mm)
        logits = model(input_ids=ids[rows], attention_mask=mask[rows], position_ids=positions,
                       past_key_values=cache, use_cache=True,
                       **mm_forward_kwargs(model, ids[rows], mm)).logits[:, -1]
        step_pos = positions[..., -1:]
        if rows.numel() < B:
            expand = torch.searchsorted(rows, src)  # request -> its context's row in the prefill
            cache.batch_select_indices(expand)
            logits = logits[expand]
            step_pos = step_pos[..., expand, :]
        step = 0
        while True:
            if banned.numel():
                logits = logits.index_fill(-1, banned, float("-inf"))
            tok, lp = sample_next(logits, params, seeds[alive], pos_offset[alive] + step)
            step += 1
            is_eos = torch.isin(tok, eos_ids)
            repeated = (detector.push(tok.cpu()).to(dev) & ~is_eos if detector is not None
                        else torch.zeros_like(is_eos))
            finished = is_eos | repeated | (step >= max_new[alive])
            for b, t, logp, e, rep in zip(alive.tolist(), tok.tolist(), lp.tolist(), is_eos.tolist(),
                                          repeated.tolist()):
                tokens[b].append(t)
                logps[b].append(logp)
                if e:
                    stop[b] = "eos"
                elif rep:
                    stop[b] = "repetition"
            keep = (~finished).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            if keep.numel() < alive.numel():
                cache.batch_select_indices(keep)
                if detector is not None:
                    detector.select(keep.cpu())
                mask = mask[keep]
                tok = tok[keep]
                alive = alive[keep]
                step_pos = step_pos[..., keep, :]
            mask = torch.cat([mask, torch.ones((alive.numel(), 1), dtype=mask.dtype, device=dev)], dim=1)
            step_pos = step_pos + 1
            logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=step_pos,
                           past_key_values=cache, use_cache=True).logits[:, -1]
        return [GenResult(tokens[b], logps[b], stop[b]) for b in range(B)]  # type: ignore[arg-type]

