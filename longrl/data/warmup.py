"""Long-CoT warm-up data by rejection sampling (k1.5 §2.2): the library behind ``longrl warmup-data``.

k1.5 builds its warm-up set by prompt engineering: a teacher is asked to reason at length —
plan, evaluate intermediate steps, reflect, explore alternatives — and only responses whose final
answer is verified correct are kept. Here:

1. the teacher sees each prompt wrapped in an instruction (:func:`with_instruction`, on a copy:
   the student never sees it, and the SFT file holds the prompt as it was);
2. it answers ``n`` times (:class:`LocalTeacher`: a model folder behind the ``hf`` or ``vllm``
   engine; :class:`EndpointTeacher`: any OpenAI-compatible server);
3. each prompt's own verifier (``ScoreRouter``, picked by ``Prompt.task``) grades every answer;
4. :func:`select` keeps the correct, distinct answers (all of them, or the shortest / first K);
   every sample, kept or dropped, is written with its verdict and the stage that dropped it.

:func:`run_warmup` drives the chunks and streams both files; :func:`build_report` turns the
per-prompt tallies into the yield report (overall, per prompt, per difficulty level or bin).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from longrl.errors import UserError
from longrl.rollout.text import Response, prompt_seed
from longrl.types import Prompt, SamplingParams

KEEP = ("all", "shortest", "first")
SALT = "warmup/"  # seeds apart from other passes over the same prompts (curate's difficulty, eval)

# k1.5 §2.2: "planning, evaluation, reflection, and exploration". A template may place the prompt
# with {prompt}; without it the instruction goes first and the prompt follows after a blank line.
DEFAULT_INSTRUCTION = (
    "Think about the problem below at length before you answer. First make a plan. Work step by step "
    "and check every intermediate result. When a step looks wrong, say so, find the mistake and fix it. "
    "If an approach stalls, step back and try a different one. When you are sure, give the final "
    "answer in the form the problem asks for."
)


# ----------------------------------------------------------------------------- prompts


def load_source(source: str, *, limit: int | None = None, seed: int = 0, field_name: str = "--in") -> list[Prompt]:
    """The prompts to sample: a prompt source (:mod:`longrl.data.sources`) or ``countdown``."""
    from longrl.data.sources import read_task_prompts

    return read_task_prompts(source, limit=limit, seed=seed, field=field_name)[0]


def read_instruction(path: str | Path | None) -> str:
    """The teacher instruction: :data:`DEFAULT_INSTRUCTION`, or a file's text (empty: no instruction)."""
    if path is None:
        return DEFAULT_INSTRUCTION
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--instruction-file {path}: no such file")
    return p.read_text(encoding="utf-8").strip()


def with_instruction(p: Prompt, instruction: str) -> Prompt:
    """A copy of ``p`` as the teacher sees it: ``instruction`` around its text and last user message.

    ``p`` is not changed (its ``messages`` are copied, not edited).

    >>> p = Prompt(id="0", text="Use 3 5 to make 8.", reference=None, task="countdown")
    >>> with_instruction(p, "Plan first.").text, p.text
    ('Plan first.\\n\\nUse 3 5 to make 8.', 'Use 3 5 to make 8.')
    >>> with_instruction(p, "Q: {prompt}\\nPlan first.").text
    'Q: Use 3 5 to make 8.\\nPlan first.'
    """
    if not instruction:
        return p

    def render(text: str) -> str:
        return instruction.replace("{prompt}", text) if "{prompt}" in instruction else f"{instruction}\n\n{text}"

    messages = None
    if p.messages:
        messages = [dict(m) for m in p.messages]
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if users:
            messages[users[-1]]["content"] = render(str(messages[users[-1]].get("content", "")))
    return dataclasses.replace(p, text=render(p.text), messages=messages)


# ----------------------------------------------------------------------------- teachers


class Teacher(Protocol):
    """Answers prompts ``n`` times each; ``Response.tokens`` is None when the teacher cannot count."""

    max_new_tokens: int

    def sample(self, prompts: list[Prompt], n: int) -> list[list[Response]]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LocalTeacher:
    """A model folder behind a rollout engine (:func:`longrl.rollout.text.open_engine`)."""

    def __init__(self, te, *, model: str, engine: str, max_new_tokens: int, temperature: float, seed: int):
        self.te = te
        self.model, self.engine = model, engine
        self.max_new_tokens = max_new_tokens
        self.params = SamplingParams(temperature=temperature)
        self.seed = seed

    def check_lengths(self, prompts: Sequence[Prompt]) -> None:
        """Refuse, before any sampling, a prompt that does not fit the context with its answer."""
        from longrl.rollout.text import check_lengths

        check_lengths(self.te, prompts, self.max_new_tokens, "prompt (with the teacher instruction)")

    def sample(self, prompts: list[Prompt], n: int) -> list[list[Response]]:
        from longrl.rollout.text import sample_responses

        return sample_responses(self.te, prompts, n=n, max_new_tokens=self.max_new_tokens, params=self.params,
                                seed=self.seed, salt=SALT)

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "model": self.model, "engine": self.engine,
                "chat_template": self.te.chat_template, "context": self.te.context}

    def close(self) -> None:
        self.te.close()


_FINISH = {"stop": "eos", "length": "max_length"}  # OpenAI finish_reason -> longrl stop reason


class EndpointTeacher:
    """A teacher behind an OpenAI-compatible ``/v1`` endpoint, health-checked when built.

    Each sample is its own chat completion (n requests per prompt, ``concurrency`` at a time)
    rather than one request with ``n``: the usage record then counts each sample's tokens, each
    sample has its own seed (reproducible on servers that honour ``seed``, as vLLM does), and
    servers without ``n`` work. A request that still fails after the client's retries is a sample
    with stop reason ``error``, never a crash.
    """

    def __init__(self, base_url: str, *, model: str | None, api_key: str | None, max_new_tokens: int,
                 temperature: float, seed: int, concurrency: int = 8, request_timeout: float = 600.0,
                 client_retries: int = 2):
        from longrl.rewards.judge import connect_openai

        self.client, self.model = connect_openai(base_url, model=model, api_key=api_key,
                                                 request_timeout=request_timeout, client_retries=client_retries,
                                                 role="teacher", url_option="--base-url",
                                                 model_option="--teacher-model")
        self.base_url = base_url
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.concurrency = concurrency
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self.errors: Counter[str] = Counter()  # failed requests by exception type
        self.first_error = ""

    def _one(self, job: tuple[Prompt, int]) -> Response:
        p, j = job
        messages = p.messages or [{"role": "user", "content": p.text}]
        try:
            reply = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=self.max_new_tokens,
                temperature=self.temperature, seed=prompt_seed(self.seed, SALT + p.id, j) % (1 << 31))
            choice = reply.choices[0]
        except Exception as e:  # noqa: BLE001 - a failed request is a rejected sample with a reason, not a crash
            self.errors[type(e).__name__] += 1
            self.first_error = self.first_error or f"{type(e).__name__}: {e}"
            return Response("", 0, "error")
        usage = getattr(reply, "usage", None)
        tokens = getattr(usage, "completion_tokens", None)
        stop = _FINISH.get(choice.finish_reason or "", choice.finish_reason or "unknown")
        return Response(choice.message.content or "", tokens, stop)  # type: ignore[arg-type]

    def sample(self, prompts: list[Prompt], n: int) -> list[list[Response]]:
        flat = list(self.pool.map(self._one, [(p, j) for p in prompts for j in range(n)]))
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def describe(self) -> dict[str, Any]:
        return {"kind": "endpoint", "model": self.model, "base_url": self.base_url,
                "concurrency": self.concurrency, "failed_requests": dict(self.errors)}

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# ----------------------------------------------------------------------------- selection


@dataclass
class Sample:
    """One teacher answer as ``samples.jsonl`` records it. Built by :func:`run_warmup`, marked by :func:`select`."""

    prompt_id: str
    index: int  # j in 0..n-1
    response: str
    tokens: int | None  # teacher tokens; None when an endpoint did not report usage
    stop: str  # eos, max_length, repetition, error
    correct: bool
    reason: str  # the verifier's reason code (ok, wrong, no_answer, ...)
    kept: bool = False
    dropped_by: str | None = None  # the selection stage that dropped it: wrong, duplicate, per_prompt

    @property
    def length(self) -> int:
        return self.tokens if self.tokens is not None else len(self.response)


def select(samples: Sequence[Sample], keep: str, per_prompt: int | None, keep_truncated: bool = False) -> list[Sample]:
    """Mark one prompt's samples kept or dropped (each dropped one by its stage); return the kept.

    Stages, in order: ``wrong`` (the verifier rejects it), ``truncated`` (correct, but cut off
    before its end: the model would learn to stop mid-answer; kept with ``keep_truncated``), ``duplicate`` (the same text as an
    earlier correct sample), ``per_prompt`` (beyond the first ``per_prompt`` in ``keep`` order:
    sample order for ``all`` and ``first``, shortest first for ``shortest``). Every sample ends
    up either kept or with the stage that dropped it.
    """
    if keep not in KEEP:
        raise ValueError(f"unknown keep {keep!r}; choose from {list(KEEP)}")
    seen: set[str] = set()
    ok = []
    for s in samples:
        s.kept, s.dropped_by = False, None
        if not s.correct or not s.response.strip():
            s.dropped_by = "wrong"
        elif s.stop != "eos" and not keep_truncated:  # cut at --max-tokens: an SFT target must end
            s.dropped_by = "truncated"
        elif s.response.strip() in seen:
            s.dropped_by = "duplicate"
        else:
            seen.add(s.response.strip())
            ok.append(s)
    if keep == "shortest":
        ok.sort(key=lambda s: (s.length, s.index))
    cap = len(ok) if per_prompt is None else per_prompt
    for rank, s in enumerate(ok):
        s.kept = rank < cap
        s.dropped_by = None if s.kept else "per_prompt"
    kept = [s for s in ok if s.kept]
    assert all(s.kept or s.dropped_by for s in samples)  # in = kept + dropped, each with its stage
    return kept


# ----------------------------------------------------------------------------- the run


@dataclass
class Tally:
    """Per-prompt outcome for the report."""

    key: str  # the difficulty group: "level L" or a difficulty bin
    correct: int
    kept: int


@dataclass
class WarmupRun:
    """What :func:`run_warmup` hands to :func:`build_report`."""

    n: int
    tallies: list[Tally] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)  # verifier reason codes over all samples
    stops: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)  # selection stage -> samples it dropped
    lengths_all: list[int] = field(default_factory=list)
    lengths_kept: list[int] = field(default_factory=list)
    chars_kept: list[int] = field(default_factory=list)
    teacher_s: float = 0.0
    verify_s: float = 0.0


def difficulty_key(p: Prompt, bins: int = 4) -> str:
    """``level L`` when the prompt has a level label, else its difficulty's bin of width 1/bins."""
    if p.level is not None:
        return f"level {p.level}"
    b = min(int(p.difficulty * bins), bins - 1)
    return f"difficulty {b / bins:.2f}-{(b + 1) / bins:.2f}"


def sft_row(p: Prompt, s: Sample) -> dict[str, Any]:
    """A ``warmup.jsonl`` row: the prompt as the student sees it (no teacher instruction) and the answer."""
    # chat-message prompts stay messages: the SFT loader renders them with the chat template
    return {"prompt": p.messages or p.text, "response": s.response, "prompt_id": p.id, "sample": s.index,
            "tokens": s.tokens}


def run_warmup(prompts: Sequence[Prompt], teacher: Teacher, router: Callable, *, n: int, instruction: str,
               keep: str = "all", per_prompt: int | None = None, chunk: int = 32, sft_out: TextIO,
               samples_out: TextIO, progress: bool = True, keep_truncated: bool = False) -> WarmupRun:
    """Sample, verify and select, ``chunk`` prompts per teacher call; stream both files as chunks finish.

    ``router(prompts, texts)`` grades against the original prompts (the verifier reads their
    references, never the instruction). Returns the tallies :func:`build_report` summarises.
    """
    from tqdm.auto import tqdm

    run = WarmupRun(n=n)
    bar = tqdm(total=len(prompts), desc="warmup-data", unit="prompt", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(prompts), chunk):
            part = list(prompts[start : start + chunk])
            t0 = time.time()
            groups = teacher.sample([with_instruction(p, instruction) for p in part], n)
            t1 = time.time()
            flat = [(p, r) for p, g in zip(part, groups) for r in g]
            scores = router([p for p, _ in flat], [r.text for _, r in flat])
            run.teacher_s += t1 - t0
            run.verify_s += time.time() - t1
            for i, (p, g) in enumerate(zip(part, groups)):
                samples = [_sample(p, j, r, s) for j, (r, s) in enumerate(zip(g, scores[i * n : (i + 1) * n]))]
                kept = select(samples, keep, per_prompt, keep_truncated)
                _tally(run, p, samples, kept)
                sft_out.writelines(json.dumps(sft_row(p, s)) + "\n" for s in kept)
                samples_out.writelines(json.dumps(dataclasses.asdict(s)) + "\n" for s in samples)
            _refuse_dead_endpoint(teacher, run)
            bar.update(len(part))
            total = sum(t.correct for t in run.tallies)
            bar.set_postfix(yield_=f"{total / (len(run.tallies) * n):.3f}", kept=len(run.lengths_kept))
    finally:
        bar.close()
    return run


def _sample(p: Prompt, j: int, r: Response, score) -> Sample:
    if r.stop == "error":  # a failed request: nothing was answered, whatever the verifier makes of ""
        return Sample(p.id, j, "", None, "error", False, "request_error")
    return Sample(p.id, j, r.text, r.tokens, r.stop, score.correct, score.reason)


def _tally(run: WarmupRun, p: Prompt, samples: list[Sample], kept: list[Sample]) -> None:
    run.tallies.append(Tally(difficulty_key(p), sum(s.correct for s in samples), len(kept)))
    run.reasons.update(s.reason for s in samples)
    run.stops.update(s.stop for s in samples)
    run.dropped.update(s.dropped_by for s in samples if s.dropped_by)
    run.lengths_all += [s.tokens for s in samples if s.tokens is not None and s.stop != "error"]
    run.lengths_kept += [s.tokens for s in kept if s.tokens is not None]
    run.chars_kept += [len(s.response) for s in kept]


def _refuse_dead_endpoint(teacher: Teacher, run: WarmupRun) -> None:
    """Every request so far failed (a wrong key, a model that went away): stop instead of burning the set."""
    if run.stops.get("error", 0) and run.stops["error"] == sum(run.stops.values()):
        detail = getattr(teacher, "first_error", "")
        raise UserError(f"every request to the teacher failed ({detail}); nothing written. "
                        "Check --api-key-env, --teacher-model and the server's log")


def _mean(xs: Sequence[float]) -> float | None:
    return round(statistics.fmean(xs), 2) if xs else None


def _group(tallies: Sequence[Tally], n: int) -> dict[str, Any]:
    samples = len(tallies) * n
    return {"prompts": len(tallies), "samples": samples, "correct": sum(t.correct for t in tallies),
            "kept": sum(t.kept for t in tallies),
            "yield": round(sum(t.correct for t in tallies) / samples, 4) if samples else None,
            "prompts_with_kept": sum(t.kept > 0 for t in tallies),
            "prompt_yield": round(sum(t.kept > 0 for t in tallies) / len(tallies), 4) if tallies else None}


def build_report(run: WarmupRun, **extra: Any) -> dict[str, Any]:
    """The yield report: overall, the per-prompt histogram of correct samples, per difficulty, lengths.

    ``yield`` is the share of samples the verifier accepts; ``prompt_yield`` the share of prompts
    with at least one kept response. Lengths are in teacher tokens.
    """
    by_key: dict[str, list[Tally]] = {}
    for t in run.tallies:
        by_key.setdefault(t.key, []).append(t)
    hist = Counter(t.correct for t in run.tallies)
    return {
        **_group(run.tallies, run.n),
        "n": run.n,
        "correct_per_prompt_histogram": {str(k): hist.get(k, 0) for k in range(run.n + 1)},
        "per_difficulty": {k: _group(v, run.n) for k, v in sorted(by_key.items())},
        "kept_tokens_mean": _mean(run.lengths_kept),
        "kept_tokens_median": statistics.median(run.lengths_kept) if run.lengths_kept else None,
        "kept_chars_mean": _mean(run.chars_kept),
        "all_tokens_mean": _mean(run.lengths_all),
        "reasons": dict(sorted(run.reasons.items())),
        "stops": dict(sorted(run.stops.items())),
        "dropped_by": dict(sorted(run.dropped.items())),
        "teacher_seconds": round(run.teacher_s, 2),
        "verify_seconds": round(run.verify_s, 2),
        **extra,
    }
