"""The two model stages of ``longrl curate`` (k1.5 §2.1): difficulty by pass rate, and the hack filter.

**Difficulty.** The model answers each prompt ``n`` times at a high temperature; the prompt's
``pass_rate`` is the share of answers its verifier accepts and ``difficulty = 1 − pass_rate``
(what curriculum and prioritized sampling read, DESIGN §4). A prompt whose pass rate reaches
``drop_pass_rate`` (default 1: always solved) teaches nothing and is dropped; never-solved prompts
are dropped only with ``drop_unsolved``.

**Easy to hack.** The model is asked for the answer with no reasoning — a direct-answer
instruction (or, for the built-in task, its answer line started right after the plan line, only
that line graded) and a short token cap — ``hack_n`` times; a prompt any of whose guesses is graded
correct can be passed without reasoning and is dropped. How a direct answer is asked for depends
on the task (:data:`DIRECT_ANSWER`); a task without a direct-answer form is kept and counted.

Both stages sample with seeds that depend on the prompt's id and the sample index only
(:func:`longrl.rollout.text.sample_responses`), and record every finished prompt in the state
file before going on, so a killed run continues where it stopped without sampling a prompt twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longrl.data.curate.rules import question_of
from longrl.types import Prompt, SamplingParams

@dataclass(frozen=True)
class DirectAnswer:
    """How a task asks for an answer with no reasoning."""

    instruction: str = ""  # replaces the prompt's reasoning instruction ("": the prompt as it is)
    prefix: Callable[[Prompt], str] = lambda p: ""  # text the answer starts with, as the model's own
    one_line: bool = False  # grade only the first line written (no room to reason after the answer)


def _countdown_prefix(p: Prompt) -> str:
    # the built-in model's own format: its plan line restates the problem, then the answer line
    # comes at once, with no attempt lines before it
    ref = p.reference
    return f"plan {ref['target']} from {' '.join(map(str, ref['numbers']))}\nanswer "


DIRECT_ANSWER: dict[str, DirectAnswer] = {
    "math": DirectAnswer("Give only the final answer within \\boxed{}, with no reasoning or explanation."),
    "countdown": DirectAnswer(prefix=_countdown_prefix, one_line=True),
}


@dataclass
class Verdicts:
    """One prompt's samples in a model stage: tokens and verdict of each."""

    correct: list[bool]
    tokens: list[int]

    @property
    def pass_rate(self) -> float:
        return sum(self.correct) / len(self.correct)


class StageState:
    """Finished prompts of the model stages, one JSON line each, appended and flushed as they finish.

    The file ``samples.jsonl`` under the state folder holds ``{"stage", "id", "correct", "tokens"}``
    rows; a torn last line (a kill mid-write) is cut off and that one prompt sampled again.
    """

    def __init__(self, folder: Path):
        self.path = folder / "samples.jsonl"
        self.done: dict[tuple[str, str], Verdicts] = {}
        if self.path.is_file():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):  # cut mid-line by a kill: drop the torn tail
                with open(self.path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self.done[(row["stage"], row["id"])] = Verdicts(row["correct"], row["tokens"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut by a kill: sampled again

    def get(self, stage: str, pid: str) -> Verdicts | None:
        return self.done.get((stage, pid))

    def add(self, stage: str, rows: Sequence[tuple[str, Verdicts]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for pid, v in rows:
                f.write(json.dumps({"stage": stage, "id": pid, "correct": v.correct, "tokens": v.tokens}) + "\n")
                self.done[(stage, pid)] = v
            f.flush()
            os.fsync(f.fileno())


def direct_answer_prompt(p: Prompt) -> tuple[Prompt, DirectAnswer] | None:
    """The prompt that asks for the answer with no reasoning, and how its answer is read.

    None when the task has no direct-answer form (e.g. code: a program is not a guess).
    """
    how = DIRECT_ANSWER.get(p.task)
    if how is None:
        return None
    if not how.instruction:
        return p, how
    text = f"{question_of(p)}\n\n{how.instruction}"
    messages = None
    if p.messages:
        messages = [dict(m) for m in p.messages]
        last = max(i for i, m in enumerate(messages) if m.get("role") == "user")
        messages[last]["content"] = text
    return dataclasses.replace(p, text=text, messages=messages), how


def run_stage(stage: str, prompts: Sequence[Prompt], state: StageState, sample: Callable[[list[Prompt]], list[Verdicts]],
              *, chunk: int, progress: Callable[[int], None]) -> dict[str, Verdicts]:
    """Verdicts of every prompt: from the state file when finished before, else sampled in chunks.

    Each chunk is recorded in the state before the next one starts; ``progress(k)`` is told of
    every k prompts finished here.
    """
    out = {p.id: v for p in prompts if (v := state.get(stage, p.id)) is not None}
    todo = [p for p in prompts if p.id not in out]
    for i in range(0, len(todo), chunk):
        part = todo[i : i + chunk]
        verdicts = sample(part)
        state.add(stage, [(p.id, v) for p, v in zip(part, verdicts)])
        out.update({p.id: v for p, v in zip(part, verdicts)})
        progress(len(part))
    return out


def sampler(te, router, *, n: int, max_new_tokens: int, temperature: float, seed: int, salt: str,
            direct: bool = False) -> Callable[[list[Prompt]], list[Verdicts]]:
    """``prompts -> verdicts``: n samples per prompt from ``te``, graded by ``router``.

    ``direct`` asks for direct answers (:func:`direct_answer_prompt`); every prompt given must
    have a direct-answer form then.
    """
    from longrl.rollout.text import sample_responses

    params = SamplingParams(temperature=temperature)

    def sample(prompts: list[Prompt]) -> list[Verdicts]:
        asked, prefixes, one_line = list(prompts), [""] * len(prompts), [False] * len(prompts)
        if direct:
            pairs = [direct_answer_prompt(p) for p in prompts]
            asked = [q for q, _ in pairs]
            prefixes = [how.prefix(p) for p, (_, how) in zip(prompts, pairs)]
            one_line = [how.one_line for _, how in pairs]
        groups = sample_responses(te, asked, n=n, max_new_tokens=max_new_tokens, params=params, seed=seed,
                                  salt=salt, prefixes=prefixes)
        flat_p = [p for p in prompts for _ in range(n)]
        flat_t = [pre + (r.text.split("\n", 1)[0] if one else r.text)
                  for pre, one, g in zip(prefixes, one_line, groups) for r in g]
        scores = router(flat_p, flat_t)
        return [Verdicts([s.correct for s in scores[i * n : (i + 1) * n]], [r.tokens for r in g])
                for i, g in enumerate(groups)]

    return sample


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None when either side is constant.

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 25])
    0.8
    """
    import numpy as np

    def ranks(v: Sequence[float]) -> Any:
        a = np.asarray(v, dtype=float)
        order = np.argsort(a, kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=float)
        for value in np.unique(a):  # ties: the mean of their ranks
            tie = a == value
            r[tie] = r[tie].mean()
        return r

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return round(float(np.corrcoef(ranks(x), ranks(y))[0, 1]), 6)
