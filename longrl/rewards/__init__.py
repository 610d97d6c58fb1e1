"""Reward scorers (DESIGN §6), chosen per prompt by its ``task`` field.

A scorer takes a batch of prompts (each carrying its ``reference``) and the responses to them
and returns one :class:`~longrl.types.Score` per response::

    >>> from longrl.rewards import get_scorer
    >>> from longrl.types import Prompt
    >>> p = Prompt(id="0", text="Use 3 5 to make 8.", reference={"numbers": [3, 5], "target": 8},
    ...            task="countdown")
    >>> get_scorer("countdown")([p], ["...\\nanswer 3+5"])[0].reason
    'ok'

Built-in scorers are imported lazily (math and code pull in heavy dependencies), so the table
below maps a name to ``module:factory``. ``register_scorer`` adds user scorers. No caller builds a
scorer any other way; every place that scores builds its router from the run config's ``rewards``
section with :func:`longrl.rewards.compose.build_router` (options, custom functions, reward terms).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from longrl.types import Prompt, Score


class Scorer(Protocol):
    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Score]: ...


_BUILTIN: dict[str, str] = {
    "countdown": "longrl.tasks.countdown:CountdownScorer",
    "countdown_image": "longrl.tasks.countdown:CountdownScorer",  # countdown drawn: the same references
    "scenes": "longrl.tasks.scenes:ScenesScorer",
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
    """Scores a mixed batch: each prompt's ``task`` picks its scorer, built once and reused.

    ``factory(task)`` builds a task's scorer (default: ``get_scorer(task, **options[task])``); a
    factory with a ``close`` owns what it built and is closed instead of the scorers.
    """

    def __init__(self, options: dict[str, dict[str, Any]] | None = None, *,
                 factory: Callable[[str], Scorer] | None = None):
        self._options = options or {}
        self._factory = factory
        self._scorers: dict[str, Scorer] = {}

    def scorer(self, task: str) -> Scorer:
        if task not in self._scorers:
            self._scorers[task] = (self._factory(task) if self._factory is not None
                                   else get_scorer(task, **self._options.get(task, {})))
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
        show_tracebacks(out)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    def close(self) -> None:
        if self._factory is not None and hasattr(self._factory, "close"):
            self._factory.close()
            return
        for s in self._scorers.values():
            close = getattr(s, "close", None)
            if close is not None:
                close()


_SHOWN_TRACEBACKS: set[tuple[str, str]] = set()


def show_tracebacks(scores: Sequence[Score]) -> None:
    """Print, once per process for each (function, reason), the traceback a user's reward function
    left in a score (:mod:`longrl.rewards.custom`: ``parts["traceback"]``, or a reward term's in
    ``parts["term_tracebacks"]``). Its responses scored 0 and are counted under the reason."""
    for s in scores:
        found = list(s.parts.get("term_tracebacks", ()))
        if s.parts.get("traceback"):
            found.append((s.parts.get("source", "?"), s.reason, s.parts["traceback"]))
        for source, reason, tb in found:
            if (str(source), reason) not in _SHOWN_TRACEBACKS:
                _SHOWN_TRACEBACKS.add((str(source), reason))
                print(f"longrl: the reward function {source} failed ({reason}: scored 0 and counted; shown "
                      f"once):\n{str(tb).rstrip()}", file=sys.stderr, flush=True)
