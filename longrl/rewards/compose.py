"""The one constructor of scorers from the run config's ``rewards`` section, and reward composition.

:func:`build_router` is what every place that scores calls — the trainer, ``eval``, ``long2short``,
``curate``, ``rewards check`` and the Ray reward workers — so an option set once in the config
reaches all of them (DESIGN §6). A task's scorer is, in this order:

1. ``rewards.custom.<task>``: a *source* — ``module:function`` or ``path/to/file.py:function``
   (:mod:`~longrl.rewards.custom`, TRL's, verl's or longrl's signature), an ``http(s)://`` reward
   endpoint (:mod:`~longrl.rewards.remote`), or a scorer name (``gsm8k: math``);
2. otherwise the built-in scorer of that name, with its options from ``rewards.math`` /
   ``rewards.code``;
3. plus ``rewards.terms.<task>``: extra terms, each a source and a weight. The reward used for the
   advantage is the task reward plus every weighted term (:func:`total_reward`) plus, in the
   trainer, the k1.5 length term; ``Score.value`` and ``Score.correct`` stay the task's own, so
   accuracy, pass rates and the length penalty's "correct" are not moved by a format bonus.

    >>> from longrl.types import Prompt
    >>> router = build_router()  # no rewards section: the built-in scorers, as before
    >>> p = Prompt(id="0", text="Use 3 5 to make 8.", reference={"numbers": [3, 5], "target": 8}, task="countdown")
    >>> router([p], ["...\\nanswer 3+5"])[0].value
    1.0
    >>> router.close()
"""

from __future__ import annotations

import importlib
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longrl.errors import UserError
from longrl.rewards import Scorer, ScoreRouter, get_scorer, scorer_names
from longrl.rewards.options import CodeRewardConfig, MathRewardConfig, has_scorer, source_kind
from longrl.types import Score

if TYPE_CHECKING:
    from longrl.config import RewardsConfig
    from longrl.rewards.options import JudgeConfig

# The judge over a local model needs a rollout engine; rewards never import the rollout package
# (DESIGN §9), so the engine is opened through this name, as the scorer registry opens scorers.
_ENGINE_OPENER = "longrl.rollout.text:open_engine"


def check_tasks(rewards: RewardsConfig | None, tasks: Iterable[str]) -> None:
    """Every task of the prompts has a scorer: a built-in one or a ``rewards.custom`` binding."""
    custom = rewards.custom if rewards is not None else {}
    missing = sorted({t for t in tasks if t not in custom and not has_scorer(t)})
    if missing:
        raise UserError(f"prompts have task {missing[0]!r}, which has no scorer (built-in: "
                        f"{', '.join(scorer_names())}); bind one with --set "
                        f"rewards.custom.{missing[0]}=my_rewards.py:function" +
                        (f" (also missing: {missing[1:]})" if missing[1:] else ""))


# ----------------------------------------------------------------------------- composition


class ComposedScorer:
    """The task's scorer plus weighted extra terms; each term's weighted value is kept in
    ``parts["terms"][name]`` and a term's reason other than ``ok`` in ``parts["term_reasons"]``."""

    def __init__(self, main: Scorer, terms: Sequence[tuple[str, float, Scorer]]):
        self.main, self.terms = main, list(terms)

    def __call__(self, prompts, responses) -> list[Score]:
        scores = [Score(s.value, s.reason, dict(s.parts)) for s in self.main(prompts, responses)]
        for s in scores:
            s.parts["terms"] = {}
        for name, weight, scorer in self.terms:
            for s, t in zip(scores, scorer(prompts, responses)):
                s.parts["terms"][name] = weight * t.value
                if t.reason != "ok":
                    s.parts.setdefault("term_reasons", {})[name] = t.reason
                if t.parts.get("traceback"):  # travels to the driver, which prints it once
                    s.parts.setdefault("term_tracebacks", []).append(
                        (t.parts.get("source", name), t.reason, t.parts["traceback"]))
        return scores


def total_reward(score: Score) -> float:
    """The task reward plus the weighted extra terms (the length penalty is the trainer's)."""
    return score.value + sum(score.parts.get("terms", {}).values())


def term_metrics(scores: Sequence[Score]) -> dict[str, float]:
    """Per-term means (``reward/term/task``, ``reward/term/<name>``) and the terms' non-``ok``
    reason counts (``reward/term_reason/<name>/<reason>``); empty when no task has terms."""
    with_terms = [s for s in scores if "terms" in s.parts]
    if not with_terms:
        return {}
    n = len(scores)
    m = {"reward/term/task": sum(s.value for s in scores) / n}
    names = sorted({k for s in with_terms for k in s.parts["terms"]})
    for name in names:
        m[f"reward/term/{name}"] = sum(s.parts.get("terms", {}).get(name, 0.0) for s in scores) / n
    reasons = Counter((k, r) for s in with_terms for k, r in s.parts.get("term_reasons", {}).items())
    m.update({f"reward/term_reason/{k}/{r}": c for (k, r), c in sorted(reasons.items())})
    return m


# ----------------------------------------------------------------------------- the constructor


class _OwnedJudge:
    """A CoT judge and the engine it runs on, closed together with the math scorer."""

    def __init__(self, judge: Any, close: Any = None):
        self.judge, self._close = judge, close

    def __call__(self, items):
        return self.judge(items)

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


def build_judge(j: JudgeConfig, where: str = "rewards.math.judge") -> _OwnedJudge | None:
    """The CoT judge ``j`` describes (an endpoint, checked now, or a local model), or None."""
    from longrl.rewards.judge import CoTJudge, EngineJudgeBackend, OpenAIJudgeBackend

    if j.base_url is not None:
        backend = OpenAIJudgeBackend(j.base_url, model=j.model, api_key=os.environ.get(j.api_key_env),
                                     max_tokens=j.max_tokens, temperature=j.temperature,
                                     request_timeout=j.request_timeout, concurrency=j.concurrency)
        return _OwnedJudge(CoTJudge(backend, retries=j.retries))
    if j.path is not None:
        module, attr = _ENGINE_OPENER.split(":")
        te = getattr(importlib.import_module(module), attr)(j.path, engine=j.engine, dtype=j.dtype,
                                                            field=f"{where}.path")
        backend = EngineJudgeBackend(te.engine, te.tokenizer, max_new_tokens=j.max_tokens, temperature=j.temperature)
        return _OwnedJudge(CoTJudge(backend, retries=j.retries), te.close)
    return None


class _Sources:
    """The router's factory: builds each source once (a task and a term may share one) and owns them."""

    def __init__(self, rewards: RewardsConfig | None, base_dir: str | Path | None):
        if rewards is None:
            from longrl.config import RewardsConfig

            rewards = RewardsConfig()
        self.rewards, self.base_dir = rewards, base_dir
        self.built: dict[str, Scorer] = {}

    def source(self, text: str, where: str) -> Scorer:
        if text not in self.built:
            self.built[text] = self._make(text, where)
        return self.built[text]

    def _make(self, text: str, where: str) -> Scorer:
        r = self.rewards
        kind = source_kind(text)
        if kind == "url":
            from longrl.rewards.remote import RemoteScorer

            return RemoteScorer(text, timeout=r.timeout, retries=r.retries, token=os.environ.get(r.token_env),
                                where=where)
        if kind == "function":
            from longrl.rewards.custom import FunctionScorer

            return FunctionScorer(text, timeout=r.timeout, workers=r.workers, base_dir=self.base_dir, where=where)
        if text == "math":
            m = r.math
            judge = build_judge(m.judge) if m.policy != "rule" else None
            try:
                return get_scorer("math", timeout=m.timeout, workers=m.workers, max_answer_chars=m.max_answer_chars,
                                  memory_mb=m.memory_mb, policy=m.policy, judge=judge, reject_hedged=m.reject_hedged,
                                  reject_code_block=m.reject_code_block, reject_prompt_echo=m.reject_prompt_echo)
            except BaseException:
                if judge is not None:
                    judge.close()
                raise
        if text == "code":
            c = r.code
            return get_scorer("code", url=c.url, token=os.environ.get(c.token_env), concurrency=c.workers,
                              time_limit=c.time_limit, memory_mb=c.memory_mb)
        return get_scorer(text)

    def __call__(self, task: str) -> Scorer:
        main = self.source(self.rewards.custom.get(task, task), f"rewards.custom.{task}")
        terms = self.rewards.terms.get(task)
        if not terms:
            return main
        return ComposedScorer(main, [(name, t.weight, self.source(t.fn, f"rewards.terms.{task}.{name}.fn"))
                                     for name, t in terms.items()])

    def close(self) -> None:
        errors = []
        for s in self.built.values():
            try:
                close = getattr(s, "close", None)
                if close is not None:
                    close()
            except Exception as e:  # noqa: BLE001 - close the others, then raise the first
                errors.append(e)
        self.built.clear()
        if errors:
            raise errors[0]


def configured_tasks(rewards: RewardsConfig | None) -> set[str]:
    """The tasks whose scorers the config sets: built at start-up, so their failures show there."""
    if rewards is None:
        return set()
    tasks = set(rewards.custom) | set(rewards.terms)
    if rewards.math != MathRewardConfig():
        tasks.add("math")
    if rewards.code != CodeRewardConfig():
        tasks.add("code")
    return tasks


def build_router(rewards: RewardsConfig | None = None, *, tasks: Iterable[str] = (),
                 base_dir: str | Path | None = None) -> ScoreRouter:
    """The router of the run config's ``rewards`` section (None: every built-in scorer's defaults).

    The scorers of ``tasks`` (the tasks of the prompts about to be scored) and of every task the
    config sets options, functions or terms for are built now: a missing judge or reward endpoint,
    a sandbox host that is down or a function that fails to load is refused here, before anything
    is written. Others are built on first use. ``base_dir`` is where relative paths and
    ``module:function`` modules are looked for (default: the working directory). Close the
    router to stop its worker processes.
    """
    tasks = set(tasks)
    check_tasks(rewards, tasks)
    sources = _Sources(rewards, base_dir)
    router = ScoreRouter(factory=sources)
    try:
        for task in sorted(tasks | configured_tasks(rewards)):
            router.scorer(task)
    except BaseException:
        router.close()
        raise
    return router
