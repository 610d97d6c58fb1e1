"""Early stop for degenerate samples: an n-gram repeat detector (k1.5 §2.6.2, DESIGN §5).

A response stops with reason ``repetition`` as soon as its last ``window`` tokens are periodic
with some period ``p <= max_period`` — i.e. they are ``window / p`` back-to-back copies of one
p-gram, every token equal to the one ``p`` before it. One differing token anywhere in the window
breaks the run, so near-repeats (a list of similar steps, a number that changes) never trigger.

The check is incremental: for every row and period ``p`` a counter holds how many consecutive
tokens so far equal the token ``p`` before them; the window is periodic with period ``p`` when that
counter reaches ``window - p``. :class:`RepeatDetector` does this for a decoding batch (a few tensor
ops per step), :func:`first_repetition` for one finished token list; both give the same answer, so
an engine that cannot stop early (or a continued partial rollout) can apply it afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def first_repetition(tokens: Sequence[int], max_period: int, window: int) -> int | None:
    """Number of tokens after which the detector fires (the response is cut there), or None."""
    if max_period <= 0:
        return None
    fired: list[int] = []
    _runs(tokens, max_period, window, fired)
    return fired[0] if fired else None


def _runs(tokens: Sequence[int], max_period: int, window: int = 0, fired: list[int] | None = None) -> list[int]:
    """``runs[p]``: how many tokens at the end each equal the token p before them (index 0 unused)."""
    runs = [0] * (max_period + 1)
    for i, tok in enumerate(tokens):
        for p in range(1, max_period + 1):
            runs[p] = runs[p] + 1 if i >= p and tokens[i - p] == tok else 0
            if fired is not None and p < window and runs[p] >= window - p:
                fired.append(i + 1)
                return runs
    return runs


class RepeatDetector:
    """Vectorised :func:`first_repetition` over the rows of a decoding batch.

    ``histories`` are the response tokens each row already has (a partial rollout continues with
    its earlier segments, so a repeat that spans two iterations is still caught).
    """

    def __init__(self, max_period: int, window: int, histories: Sequence[Sequence[int]]):
        if max_period >= window:
            raise ValueError(f"repeat window ({window}) must exceed the largest period ({max_period})")
        self.max_period, self.window = max_period, window
        self.periods = torch.arange(1, max_period + 1)
        self.need = window - self.periods  # run length at which period p fires
        b = len(histories)
        self.tail = torch.full((b, max_period), -1, dtype=torch.int64)  # last max_period tokens
        self.runs = torch.zeros((b, max_period), dtype=torch.int64)
        for r, hist in enumerate(histories):
            if hist:
                last = list(hist[-max_period:])
                self.tail[r, max_period - len(last):] = torch.tensor(last)
                self.runs[r] = torch.tensor(_runs(hist, max_period)[1:])

    def push(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row (int64 ``[B]``); return a bool ``[B]``: the row just repeated."""
        prev = self.tail.flip(1)
        self.runs = torch.where(prev == tokens[:, None], self.runs + 1, 0)
        self.tail = torch.cat([self.tail[:, 1:], tokens[:, None]], dim=1)
        return (self.runs >= self.need).any(dim=1)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (the batch dropped its finished samples)."""
        self.tail, self.runs = self.tail[rows], self.runs[rows]
