"""Picking short responses from sampled groups (k1.5 §2.4): pure functions of lengths and verdicts.

A :class:`Group` holds the n responses sampled for one prompt, their lengths in tokens and the
verifier's verdicts. From it:

- **shortest rejection sampling** keeps the shortest correct response (an SFT example);
- **DPO pairs** take that response as the positive and, as negatives, every wrong response longer
  than it and every correct response at least ``ratio`` (1.5) times its length.

Ties: among correct responses of equal shortest length the first sampled wins (the others are
neither kept nor negatives, being under 1.5× its length). A wrong response no longer than the
positive is not a negative: preferring the positive over it would teach correctness, not brevity,
and k1.5 builds pairs for brevity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from longrl.data.images import IMAGES_KEY, encode_base64
from longrl.types import Prompt


@dataclass
class Group:
    """The n samples of one prompt. Built by :func:`longrl.long2short.sample.sample_groups`."""

    prompt: Prompt
    responses: list[str]  # decoded responses, special tokens removed
    lengths: list[int]  # sampled response lengths in tokens (EOS included when it stopped there)
    correct: list[bool]  # the verifier's verdict on each response


def shortest_correct(lengths: Sequence[int], correct: Sequence[bool]) -> int | None:
    """Index of the shortest correct response (first on ties), or None when none is correct.

    >>> shortest_correct([30, 10, 10, 5], [True, True, True, False])
    1
    """
    best = None
    for j, (n, ok) in enumerate(zip(lengths, correct)):
        if ok and (best is None or n < lengths[best]):
            best = j
    return best


def preference_pairs(lengths: Sequence[int], correct: Sequence[bool], ratio: float = 1.5
                     ) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs of one group, k1.5 §2.4.

    chosen = the shortest correct response ``p``; rejected = each wrong response with
    ``len > len_p`` and each correct response with ``len >= ratio · len_p``, in sample order.

    >>> preference_pairs([10, 20, 15, 12, 8], [True, False, True, False, False])
    [(0, 1), (0, 2), (0, 3)]
    """
    p = shortest_correct(lengths, correct)
    if p is None:
        return []
    lp = lengths[p]
    return [(p, j) for j, (n, ok) in enumerate(zip(lengths, correct))
            if j != p and ((not ok and n > lp) or (ok and n >= ratio * lp))]


def _prompt_columns(p: Prompt) -> dict:
    """The prompt as a data row holds it: text or chat messages, and its images (base64, as
    :func:`longrl.data.sources.prompt_row` writes them) when it has any."""
    cols = {"prompt": p.messages or p.text}
    if p.images:
        cols[IMAGES_KEY] = [encode_base64(b) for b in p.images]
    return cols


def shortest_rows(groups: Sequence[Group]) -> list[dict]:
    """SFT rows ``{prompt, [images], response, tokens}``: the shortest correct response of each group
    that has one (:func:`longrl.data.sources.load_sft_examples` reads them back, images included)."""
    rows = []
    for g in groups:
        j = shortest_correct(g.lengths, g.correct)
        if j is not None:
            rows.append(_prompt_columns(g.prompt) | {"response": g.responses[j], "tokens": g.lengths[j],
                                                      "prompt_id": g.prompt.id})
    return rows


def pair_rows(groups: Sequence[Group], ratio: float = 1.5) -> list[dict]:
    """DPO rows ``{prompt, [images], chosen, rejected, chosen_tokens, rejected_tokens, rejected_correct}``."""
    rows = []
    for g in groups:
        for c, r in preference_pairs(g.lengths, g.correct, ratio):
            rows.append(_prompt_columns(g.prompt) | {
                "chosen": g.responses[c], "rejected": g.responses[r], "chosen_tokens": g.lengths[c],
                "rejected_tokens": g.lengths[r], "rejected_correct": g.correct[r], "prompt_id": g.prompt.id})
    return rows


def selection_stats(groups: Sequence[Group], ratio: float = 1.5) -> dict:
    """Counts and mean lengths that say what the selection kept and what it had to skip."""
    lengths = np.array([n for g in groups for n in g.lengths], dtype=float)
    correct = np.array([c for g in groups for c in g.correct], dtype=bool)
    picked = [g.lengths[j] for g in groups if (j := shortest_correct(g.lengths, g.correct)) is not None]
    pairs = [len(preference_pairs(g.lengths, g.correct, ratio)) for g in groups]
    return {
        "prompts": len(groups),
        "samples": int(lengths.size),
        "prompts_without_correct": sum(not any(g.correct) for g in groups),
        "prompts_all_correct": sum(all(g.correct) for g in groups),
        "pass@1": float(correct.mean()) if correct.size else 0.0,
        "tokens_mean_all": float(lengths.mean()) if lengths.size else 0.0,
        "tokens_mean_correct": float(lengths[correct].mean()) if correct.any() else 0.0,
        "tokens_mean_shortest_correct": float(np.mean(picked)) if picked else 0.0,
        "pairs": int(sum(pairs)),
        "prompts_with_pairs": sum(n > 0 for n in pairs),
    }
