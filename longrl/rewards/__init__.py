"""Reward scorers (DESIGN §6), chosen per prompt by its ``task`` field.

A scorer takes a batch of prompts (each carrying its ``reference``) and the responses to them
and returns one :class:`~longrl.types.Score` per response::

    >>> from longrl.rewards import get_scorer
    >>> from longrl.types import Prompt
    >>> p = Prompt(id="0", text="Use 3 5 to make 8.", reference={"numbers": [3, 5], "target": 8},
    ...            task="countdown")
    >>> get_scorer("countdown")([p], ["...\\nAnswer: 3+5"])[0].reason
    'ok'

Built-in scorers are imported lazily (math and code pull in heavy dependencies), so the table
below maps a name to ``module:factory``. ``register_scorer`` adds user scorers. No caller builds a
scorer any other way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from longrl.types import Prompt, Score


class Scorer(Protocol):
    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Score]: ...


_BUILTIN: dict[str, str] = {
    "countdown": "longrl.tasks.countdown:CountdownScorer",
    "math": "longrl.rewards.math:MathScorer",
    "code": "longrl.rewards.code:CodeScorer",
}
_REGISTERED: dict[str, Callable[..., Scorer]] = {}


def register_scorer(name: str) -> Callable[[Callable[..., Scorer]], Callable[..., Scorer]]:
    """Decorator: make ``factory(**options)`` available as the scorer ``name``."""

    def wrap(factory: Callable[..., Scorer]) -> Callable[..., Scorer]:
        _REGISTERED[name] = factory
        return factory

    return wrap


def scorer_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_scorer(name: str, **options: Any) -> Scorer:
    """Build the scorer called ``name``; ``options`` go to its factory."""
    if name in _REGISTERED:
        return _REGISTERED[name](**options)
    if name not in _BUILTIN:
        raise ValueError(f"unknown scorer {name!r}; choose from {scorer_names()}")
    module, attr = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), attr)(**options)


class ScoreRouter:
    """Scores a mixed batch: each prompt's ``task`` picks its scorer, built once and reused."""

    def __init__(self, options: dict[str, dict[str, Any]] | None = None):
        self._options = options or {}
        self._scorers: dict[str, Scorer] = {}

    def scorer(self, task: str) -> Scorer:
        if task not in self._scorers:
            self._scorers[task] = get_scorer(task, **self._options.get(task, {}))
        return self._scorers[task]

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Score]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        out: list[Score | None] = [None] * len(prompts)
        by_task: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            by_task.setdefault(p.task, []).append(i)
        for task, idx in by_task.items():
            scores = self.scorer(task)([prompts[i] for i in idx], [responses[i] for i in idx])
            for i, s in zip(idx, scores):
                out[i] = s
        return out  # type: ignore[return-value]

    def close(self) -> None:
        for s in self._scorers.values():
            close = getattr(s, "close", None)
            if close is not None:
                close()
