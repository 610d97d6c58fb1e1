"""A generated task's two splits: a fixed held-out set, and an unlimited training stream that skips it.

    >>> import random
    >>> from longrl.types import Prompt
    >>> def make(rng, level, pid):
    ...     return Prompt(pid, str(rng.randrange(40)), None, "toy", level=level)
    >>> toy = Splits("toy", (1, 2), make, key=lambda p: p.text)
    >>> held = toy.heldout(3)
    >>> len(held), [p.level for p in held]
    (6, [1, 1, 1, 2, 2, 2])
    >>> from itertools import islice
    >>> any(p.text in {q.text for q in toy.heldout()} for p in islice(toy.train(0, (1, 2)), 200))
    False
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterator, Sequence

from longrl.types import Prompt

HELDOUT_PER_LEVEL = 150  # a held-out set's problems per level; a smaller set is a per-level prefix of it


class Splits:
    """``make_prompt(rng, level, id)`` draws one problem; ``key(prompt)`` says when two are the same one.

    The held-out set is ``HELDOUT_PER_LEVEL`` distinct problems of each level from a fixed seed; a
    smaller one takes the first problems of each level, so every held-out set is a subset of what the
    training stream skips. Ids are ``NAME-heldout-LEVEL-I`` and ``NAME-train-SEED-I``.
    """

    def __init__(self, name: str, levels: Sequence[int], make_prompt: Callable[[random.Random, int, str], Prompt],
                 key: Callable[[Prompt], Hashable]):
        self.name, self.levels, self.make_prompt, self.key = name, tuple(levels), make_prompt, key
        self._heldout: tuple[Prompt, ...] | None = None

    def heldout(self, n_per_level: int = HELDOUT_PER_LEVEL) -> list[Prompt]:
        if not 0 < n_per_level <= HELDOUT_PER_LEVEL:
            raise ValueError(f"{n_per_level} held-out problems per level: choose 1 to {HELDOUT_PER_LEVEL}")
        full = self._full_heldout()
        return [p for level in self.levels for p in [q for q in full if q.level == level][:n_per_level]]

    def _full_heldout(self) -> tuple[Prompt, ...]:
        if self._heldout is None:
            rng = random.Random(f"{self.name}-heldout-v1")
            out: list[Prompt] = []
            seen: set = set()
            for level in self.levels:
                while sum(p.level == level for p in out) < HELDOUT_PER_LEVEL:
                    p = self.make_prompt(rng, level, f"{self.name}-heldout-{level}-{len(out)}")
                    if self.key(p) not in seen:
                        seen.add(self.key(p))
                        out.append(p)
            self._heldout = tuple(out)
        return self._heldout

    def train(self, seed: int, levels: Sequence[int]) -> Iterator[Prompt]:
        """Unlimited training prompts, each level drawn uniformly from ``levels``; no held-out problem."""
        held = {self.key(p) for p in self._full_heldout()}
        rng = random.Random(f"{self.name}-train-{seed}")
        i = 0
        while True:
            level = rng.choice(list(levels))
            p = self.make_prompt(rng, level, f"{self.name}-train-{seed}-{i}")
            i += 1
            if self.key(p) not in held:
                yield p
