"""The math scorer (DESIGN §6): final-answer extraction, hacking guards, math-verify, a CoT judge.

For each response the scorer

1. extracts the final answer (:func:`~longrl.rewards.math_extract.final_answer`: the last box
   outside code blocks and prompt echoes, else the last ``Answer:`` line);
2. applies the guards against reward hacking: an answer longer than ``max_answer_chars`` scores 0
   (``too_long``), one that offers several values for a single-valued reference scores 0
   (``hedged``), one found only inside a code block or an echo of the prompt scores 0
   (``in_code_block`` / ``prompt_echo``);
3. compares it with the reference using math-verify in a pool of worker processes with a hard
   per-answer deadline (:mod:`~longrl.rewards.math_pool`; numbers below 1e-3 are compared
   exactly, as math-verify's 6-decimal rounding would not): ``ok`` 1, ``wrong`` 0, and 0 with
   ``parse_error``, ``bad_reference``, ``timeout`` or ``crash`` when no verdict could be had;
4. with ``policy="rule_then_judge"``, hands the responses the rule could not read (``no_answer``,
   ``parse_error``, ``bad_reference``) to the chain-of-thought judge (:mod:`longrl.rewards.judge`);
   with ``policy="judge"``, every response that passes the guards goes to the judge (math-verify
   is not run), including those without an extractable answer.

Every score carries its ``reason``; ``scorer.counts`` totals them over the scorer's life, for the
metrics. ``parts`` holds the extracted answer, the reference as compared, the grader that decided
and, from the pool, the check's seconds.

    >>> from longrl.types import Prompt
    >>> scorer = MathScorer(workers=1)
    >>> p = Prompt(id="0", text="What is 1/2 + 1/4?", reference="\\\\frac{3}{4}", task="math")
    >>> [(s.value, s.reason) for s in scorer([p, p], ["... so \\\\boxed{0.75}", "\\\\boxed{3/4 or 1}"])]
    [(1.0, 'ok'), (0.0, 'hedged')]
    >>> scorer.close()
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from longrl.errors import UserError
from longrl.rewards.math_extract import clean_text, final_answer, is_hedged, reference_answer
from longrl.rewards.math_pool import VerifyPool
from longrl.types import Prompt, Score

POLICIES = ("rule", "judge", "rule_then_judge")
# Reasons meaning "the rule could not read this response": the judge gets a say on these under
# rule_then_judge. Guard reasons (hedged, too_long, ...) are hacks, not parse failures, and stay 0.
JUDGE_FALLBACK = frozenset({"no_answer", "parse_error", "bad_reference"})
_SHOWN_CHARS = 200  # how much of an over-long answer goes into Score.parts


class MathScorer:
    """Scores math responses against ``Prompt.reference`` (the reference answer).

    Options (all keyword, all with defaults; ``longrl.rewards.get_scorer("math", **options)``):

    - ``timeout``: seconds one math-verify check may run before its worker is killed.
    - ``workers``: grading processes; default ``min(2, cpu count)``.
    - ``max_answer_chars``: longest final answer graded; longer scores 0 (``too_long``). The longest
      MATH-500 reference is 53 characters.
    - ``memory_mb``: address-space cap per grading worker, in MiB.
    - ``policy``: ``rule`` (math-verify only), ``judge`` (the CoT judge only) or ``rule_then_judge``.
    - ``judge``: a :class:`~longrl.rewards.judge.CoTJudge` (e.g. over a rollout engine), or
    - ``judge_base_url`` / ``judge_model`` / ``judge_api_key`` / ``judge_max_tokens``: build one
      over an OpenAI-compatible endpoint; it is health-checked here, at start-up.
    - ``reject_hedged`` / ``reject_code_block`` / ``reject_prompt_echo``: the guards of step 2 (on
      by default); off, such an answer is graded like any other.

    The run config's ``rewards.math`` section sets these (:func:`longrl.rewards.compose.build_router`).
    A judge with a ``close`` (one over a local engine) is closed with the scorer.
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        workers: int | None = None,
        max_answer_chars: int = 256,
        memory_mb: int | None = 4096,
        policy: str = "rule",
        judge: Any = None,
        judge_base_url: str | None = None,
        judge_model: str | None = None,
        judge_api_key: str | None = None,
        judge_max_tokens: int = 2048,
        reject_hedged: bool = True,
        reject_code_block: bool = True,
        reject_prompt_echo: bool = True,
    ):
        if policy not in POLICIES:
            raise UserError(f"math scorer: unknown policy {policy!r}; choose from {list(POLICIES)}")
        if timeout <= 0:
            raise UserError(f"math scorer: timeout must be > 0 seconds, got {timeout}")
        if max_answer_chars < 1:
            raise UserError(f"math scorer: max_answer_chars must be >= 1, got {max_answer_chars}")
        self.policy = policy
        self.max_answer_chars = max_answer_chars
        self.reject_hedged, self.reject_code_block = reject_hedged, reject_code_block
        self.reject_prompt_echo = reject_prompt_echo
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # one batch at a time: the pool's pipes are not shared safely
        self.judge = judge
        if judge is None and judge_base_url is not None:
            from longrl.rewards.judge import CoTJudge, OpenAIJudgeBackend

            self.judge = CoTJudge(
                OpenAIJudgeBackend(
                    judge_base_url, model=judge_model, api_key=judge_api_key, max_tokens=judge_max_tokens
                )
            )
        if policy != "rule" and self.judge is None:
            raise UserError(
                f"math scorer: policy={policy!r} needs a judge; set judge_base_url (an "
                "OpenAI-compatible endpoint) or pass judge=CoTJudge(...)"
            )
        self.pool: VerifyPool | None = None
        if policy != "judge":
            n = workers if workers is not None else min(2, os.cpu_count() or 1)
            if n < 1:
                raise UserError(f"math scorer: workers must be >= 1, got {n}")
            self.pool = VerifyPool(n, timeout, memory_mb=memory_mb)

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Score]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        with self._lock:
            return self._score(prompts, responses)

    def _score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Score]:
        scores: list[Score | None] = [None] * len(prompts)
        refs: list[str] = []
        checks: list[tuple[int, str, str, str]] = []  # (index, answer, reference, source)
        to_judge: list[int] = []
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            score, ref, answer, source = self._screen(prompt, response)
            refs.append(ref)
            if score is not None:
                scores[i] = score
                if self.policy != "rule" and score.reason in JUDGE_FALLBACK:
                    to_judge.append(i)
            elif self.policy == "judge":
                to_judge.append(i)
            else:
                checks.append((i, answer, ref, source))
        if checks:
            assert self.pool is not None
            outcomes = self.pool.run([(a, r) for _, a, r, _ in checks])
            for (i, answer, ref, source), out in zip(checks, outcomes):
                parts = {
                    "answer": answer,
                    "reference": ref,
                    "grader": "rule",
                    "source": source,
                    "seconds": out.seconds,
                }
                if out.detail:
                    parts["detail"] = out.detail
                scores[i] = Score(1.0 if out.status == "ok" else 0.0, out.status, parts)
                if self.policy == "rule_then_judge" and out.status in JUDGE_FALLBACK:
                    to_judge.append(i)
        if to_judge:
            self._judge(to_judge, prompts, responses, refs, scores)
        for s in scores:
            assert s is not None
            self.counts[s.reason] += 1
        return scores  # type: ignore[return-value]

    def _screen(self, prompt: Prompt, response: str) -> tuple[Score | None, str, str, str]:
        """Extraction and guards; returns ``(final score or None, reference, answer, source)``."""
        try:
            ref = reference_answer(prompt.reference)
        except ValueError as e:
            return Score(0.0, "bad_reference", {"detail": str(e)}), "", "", ""
        echoes = (prompt.text, str(prompt.tags.get("problem", ""))) if self.reject_prompt_echo else ()
        ext = final_answer(response, echoes, mask_code=self.reject_code_block)
        if ext.answer is None:
            return Score(0.0, ext.reason, {"answer": None, "reference": ref, "grader": "rule"}), ref, "", ""
        parts = {"answer": ext.answer[:_SHOWN_CHARS], "reference": ref, "grader": "rule", "source": ext.kind}
        if len(ext.answer) > self.max_answer_chars:
            parts["answer_chars"] = len(ext.answer)
            return Score(0.0, "too_long", parts), ref, ext.answer, ext.kind
        if self.reject_hedged and is_hedged(ext.answer, ref):
            return Score(0.0, "hedged", parts), ref, ext.answer, ext.kind
        return None, ref, ext.answer, ext.kind

    def _judge(self, idx: list[int], prompts, responses, refs, scores: list[Score | None]) -> None:
        from longrl.rewards.judge import JudgeItem

        items = [
            JudgeItem(
                str(prompts[i].tags.get("problem") or prompts[i].text), refs[i], clean_text(responses[i])
            )
            for i in idx
        ]
        for i, verdict in zip(idx, self.judge(items)):
            prior = scores[i]
            parts = dict(prior.parts) if prior is not None else {"reference": refs[i]}
            if prior is not None:
                parts["rule_reason"] = prior.reason
            parts.update(grader="judge", judge_attempts=verdict.attempts)
            if verdict.reason == "judge_error":
                parts["judge_output"] = verdict.raw[-_SHOWN_CHARS:]
            scores[i] = Score(1.0 if verdict.correct else 0.0, verdict.reason, parts)

    def close(self) -> None:
        """Shut the grading workers down (and the judge's engine, if it has one). Safe to call twice."""
        if self.pool is not None:
            self.pool.close()
        close = getattr(self.judge, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> MathScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
