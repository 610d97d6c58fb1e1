"""Countdown: reach a target by combining all given numbers with + - * /.

An exactly verifiable search task where more search in the chain of thought really helps.
A problem has three numbers and a target reachable by ``(a op b) op c`` with every number used
once and every intermediate a positive integer. The search space is small (at most 12 first steps
``a op b``; for each, the closest final step with the remaining number), so a worked solution
is a list of attempts, one per line, each checked against the target.

Difficulty levels (the labels curriculum sampling uses) are set by how many of the first steps
lead to the target — the fewer, the longer the search:

=====  =========  ========================================  =======================
level  numbers    first steps that reach the target         difficulty (L-1)/(n-1)
=====  =========  ========================================  =======================
1      1..9       at least 3                                0.0
2      1..9       exactly 2                                 0.5
3      2..9       exactly 1                                 1.0
=====  =========  ========================================  =======================

The long-CoT trace writer (:func:`write_trace`) produces what k1.5's warm-up targets: a plan line,
attempts in a random order, each intermediate result checked against the target, an occasional
arithmetic slip that is noticed and corrected ("wait"), and an answer that restates the steps that
reached the target (the verifier recomputes every step). Searchers differ in *patience*: a trace either searches until it finds the
target or, with probability ``give_up_prob``, stops after a random number of attempts and answers
its closest attempt. The warm-up therefore teaches the model how to search but not how much search
pays; RL on the verifier's reward is what learns to keep searching — the headroom between pass@1
and pass@k that the k1.5 update uses. ``give_up_prob=0`` writes only successful traces.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

from longrl.tasks.splits import HELDOUT_PER_LEVEL, Splits
from longrl.types import Prompt, Score

TASK = "countdown"
# Bumped whenever problem draws or traces change: warm checkpoints are keyed on it, so a warm-up
# trained on an older draw (whose training prompts may hold today's held-out problems) is not reused.
GENERATOR_VERSION = 2
LEVELS = (1, 2, 3)
_LEVEL_SPEC = {1: (1, 9, 3, 99), 2: (1, 9, 2, 2), 3: (2, 9, 1, 1)}  # lo, hi, min/max solving first steps
MAX_TARGET = 99
MAX_ANSWER_CHARS = 64  # an answer line longer than this is not an expression over three numbers
SEARCH_ORDERS = ("random", "fixed")  # how a trace orders its attempts (see write_trace)


@dataclass(frozen=True)
class Step:
    """``left op right = value`` with ``left >= right`` for - and /."""

    left: int
    op: str
    right: int
    value: int

    def text(self) -> str:
        return f"{self.left}{self.op}{self.right}"


def _apply(x: int, op: str, y: int) -> int | None:
    """Countdown arithmetic: results must be positive integers."""
    if op == "+":
        return x + y
    if op == "*":
        return x * y
    if op == "-":
        return x - y if x > y else None
    if op == "/":
        return x // y if y > 1 and x % y == 0 else None
    raise ValueError(op)


def _steps(x: int, y: int) -> list[Step]:
    """Every valid way to combine two numbers, larger operand first for - and /."""
    hi, lo = max(x, y), min(x, y)
    out = []
    for op in "+*-/":
        v = _apply(hi, op, lo)
        if v is not None:
            out.append(Step(hi, op, lo, v))
    return out


@dataclass(frozen=True)
class Attempt:
    """A first step on a pair, then the final step with the remaining number closest to target."""

    first: Step
    final: Step

    @property
    def value(self) -> int:
        return self.final.value

    def expression(self) -> str:
        a = f"({self.first.text()})"
        r = str(self.final.right if self.final.left == self.first.value else self.final.left)
        left, right = (a, r) if self.final.left == self.first.value else (r, a)
        return f"{left}{self.final.op}{right}"

    def steps_text(self) -> str:
        """The answer form the traces use: both steps, e.g. ``7*3=21 21+8=29``."""
        return f"{self.first.text()}={self.first.value} {self.final.text()}={self.final.value}"


def _first_steps(numbers: Sequence[int]) -> Iterator[tuple[Step, int]]:
    """Each distinct first step on a pair, with the number left over."""
    seen = set()
    for i in range(3):
        for j in range(i + 1, 3):
            rest = numbers[3 - i - j]
            for first in _steps(numbers[i], numbers[j]):
                key = (first.left, first.op, first.right, rest)
                if key not in seen:
                    seen.add(key)
                    yield first, rest


def attempts(numbers: Sequence[int], target: int) -> list[Attempt]:
    """All first steps, each finished with its closest final step (ties: first in + * - / order).

    The closest final step reaches the target whenever any final step does, so searching these
    attempts is complete for ``(a op b) op c``.
    """
    return [Attempt(first, min(_steps(first.value, rest), key=lambda s: abs(s.value - target)))
            for first, rest in _first_steps(numbers)]


def solving_first_steps(numbers: Sequence[int], target: int) -> int:
    return sum(a.value == target for a in attempts(numbers, target))


def make_problem(rng: random.Random, level: int) -> tuple[list[int], int]:
    """Draw numbers and a target whose count of solving first steps matches ``level``."""
    lo, hi, need_min, need_max = _LEVEL_SPEC[level]
    while True:
        numbers = [rng.randint(lo, hi) for _ in range(3)]
        counts = _solving_counts(tuple(numbers))
        targets = [t for t, n in counts.items()
                   if 10 <= t <= MAX_TARGET and t not in numbers and need_min <= n <= need_max]
        if targets:
            return numbers, rng.choice(sorted(targets))


def _solving_counts(numbers: tuple[int, ...]) -> dict[int, int]:
    """target -> how many distinct first steps reach it (same count as :func:`solving_first_steps`)."""
    counts: dict[int, int] = {}
    for first, rest in _first_steps(numbers):
        for v in {f.value for f in _steps(first.value, rest)}:
            counts[v] = counts.get(v, 0) + 1
    return counts


def prompt_text(numbers: Sequence[int], target: int) -> str:
    return f"Use {' '.join(map(str, numbers))} to make {target}.\n"


def make_prompt(rng: random.Random, level: int, pid: str) -> Prompt:
    numbers, target = make_problem(rng, level)
    return Prompt(
        id=pid,
        text=prompt_text(numbers, target),
        reference={"numbers": numbers, "target": target},
        task=TASK,
        difficulty=(level - 1) / (len(LEVELS) - 1),
        level=level,
    )


def train_prompts(seed: int, levels: Sequence[int] = LEVELS) -> Iterator[Prompt]:
    """An unlimited stream of training prompts, level drawn uniformly from ``levels``; held-out problems
    (:func:`heldout_prompts`) are skipped, so they never appear in training."""
    return _SPLITS.train(seed, levels)


def heldout_prompts(n_per_level: int = HELDOUT_PER_LEVEL) -> list[Prompt]:
    """The fixed held-out set: ``n_per_level`` distinct problems of each level, from a fixed seed (a
    smaller set is a per-level prefix of the full one: :class:`longrl.tasks.splits.Splits`)."""
    return _SPLITS.heldout(n_per_level)


def _key(ref: dict) -> tuple:
    return (tuple(sorted(ref["numbers"])), ref["target"])


_SPLITS = Splits(TASK, LEVELS, make_prompt, key=lambda p: _key(p.reference))


# --------------------------------------------------------------------------- trace writer


def _attempt_line(att: Attempt, target: int, rng: random.Random, slip_prob: float) -> str:
    first = f"{att.first.text()}={att.first.value}"
    if rng.random() < slip_prob:  # a wrong turn, noticed and corrected
        wrong = att.first.value + rng.choice([-2, -1, 1, 2])
        if wrong > 0:
            first = f"{att.first.text()}={wrong} wait {att.first.text()}={att.first.value}"
    verdict = "yes" if att.value == target else ("over" if att.value > target else "under")
    return f"{first} {att.final.text()}={att.value} {verdict}"


def write_trace(
    numbers: Sequence[int],
    target: int,
    rng: random.Random,
    *,
    give_up_prob: float = 0.5,
    slip_prob: float = 0.05,
    short: bool = False,
    order: str = "random",
    patience: int | None = None,
) -> str:
    """A worked solution ending with ``answer <expr>`` (no EOS; the tokenizer adds it).

    ``short=True`` writes the short-CoT variant: only the successful attempt and the answer.
    ``order="fixed"`` tries the first steps systematically (pairs in prompt order, then + * - /)
    instead of in a random order: the next attempt follows from the last line alone.
    ``patience`` fixes how many attempts the searcher makes before it gives up (in place of the
    random draw that ``give_up_prob`` makes).

    >>> print(write_trace([3, 7, 8], 29, random.Random(0), give_up_prob=0, slip_prob=0))  # doctest: +SKIP
    plan 29 from 3 7 8
    8+7=15 15*3=45 over
    7*3=21 21+8=29 yes
    answer 7*3=21 21+8=29
    """
    if order not in SEARCH_ORDERS:
        raise ValueError(f"order={order!r}: choose from {SEARCH_ORDERS}")
    tries = attempts(numbers, target)
    if order == "random":
        rng.shuffle(tries)
    solved = [a for a in tries if a.value == target]
    if short:
        sol = solved[0]
        return f"answer {sol.steps_text()}"
    if patience is not None:
        if patience < 1:
            raise ValueError(f"patience={patience}: a searcher makes at least one attempt")
    elif rng.random() < give_up_prob:
        patience = rng.randint(1, max(1, len(tries) - 1))
    else:
        patience = len(tries)
    lines = [f"plan {target} from {' '.join(map(str, numbers))}"]
    tried: list[Attempt] = []
    for att in tries[:patience]:
        lines.append(_attempt_line(att, target, rng, slip_prob))
        tried.append(att)
        if att.value == target:
            lines.append(f"answer {att.steps_text()}")
            return "\n".join(lines)
    best = min(tried, key=lambda a: abs(a.value - target))
    lines.append("give up")
    lines.append(f"answer {best.steps_text()}")
    return "\n".join(lines)


def sft_examples(seed: int, n: int, *, give_up_prob: float = 0.5, slip_prob: float = 0.05,
                 short: bool = False, levels: Sequence[int] = LEVELS, order: str = "random") -> list[tuple[str, str]]:
    """``n`` (prompt, response) pairs for the warm-up, from training prompts only."""
    rng = random.Random(f"countdown-sft-{seed}")
    out = []
    for p in train_prompts(seed + 10_000, levels):
        ref = p.reference
        out.append((p.text, write_trace(ref["numbers"], ref["target"], rng, give_up_prob=give_up_prob,
                                        slip_prob=slip_prob, short=short, order=order)))
        if len(out) == n:
            return out
    raise AssertionError("unreachable: train_prompts is unlimited")


# --------------------------------------------------------------------------- verifier

_ANSWER = re.compile(r"^answer[ \t]+(.+?)[ \t]*$", re.MULTILINE)


def _eval(node: ast.AST, used: list[int]) -> Fraction:
    """Evaluate an expression of integer literals and + - * / only; nothing else is accepted."""
    if isinstance(node, ast.Expression):
        return _eval(node.body, used)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        x, y = _eval(node.left, used), _eval(node.right, used)
        if isinstance(node.op, ast.Add):
            return x + y
        if isinstance(node.op, ast.Sub):
            return x - y
        if isinstance(node.op, ast.Mult):
            return x * y
        if y == 0:
            raise ZeroDivisionError
        return x / y
    raise ValueError("not an arithmetic expression")


_STEP = re.compile(r"^(\d+)([-+*/])(\d+)=(\d+)$")


def _verify_steps(expr: str, numbers: Sequence[int], target: int) -> Score | None:
    """An answer written as steps ``a op b=c c op d=t``: every step is recomputed here.

    Returns None when ``expr`` is not in step form (then it is read as an expression).
    """
    parts = expr.split()
    steps = [_STEP.match(p) for p in parts]
    if not parts or not all(steps):
        return None
    pool = list(numbers)
    value = None
    for m in steps:
        x, op, y, claimed = int(m[1]), m[2], int(m[3]), int(m[4])
        for operand in (x, y):
            if operand not in pool:
                return Score(0.0, "wrong_numbers", {"answer": expr})
            pool.remove(operand)
        exact = Fraction(x) + y if op == "+" else Fraction(x) - y if op == "-" else (
            Fraction(x) * y if op == "*" else (Fraction(x) / y if y else None))
        if exact is None or exact != claimed:
            return Score(0.0, "bad_arithmetic", {"answer": expr})
        pool.append(claimed)
        value = claimed
    if len(pool) != 1:  # every given number must be used exactly once
        return Score(0.0, "wrong_numbers", {"answer": expr})
    if value != target:
        return Score(0.0, "wrong_value", {"answer": expr})
    return Score(1.0, "ok", {"answer": expr})


def verify(response: str, numbers: Sequence[int], target: int) -> Score:
    """Score a response: 1 if its last ``answer`` line uses exactly ``numbers`` and equals ``target``.

    The answer is either steps (``7*3=21 21+8=29``, each recomputed; a wrong step scores 0 even when
    the last value is right) or one expression (``(7*3)+8``).
    Reasons: ``ok``, ``no_answer``, ``too_long``, ``bad_expression``, ``bad_arithmetic``,
    ``wrong_numbers``, ``wrong_value``.
    """
    found = _ANSWER.findall(response)
    if not found:
        return Score(0.0, "no_answer")
    expr = found[-1]
    if len(expr) > MAX_ANSWER_CHARS:
        return Score(0.0, "too_long", {"answer": expr[:MAX_ANSWER_CHARS]})
    stepped = _verify_steps(expr, numbers, target)
    if stepped is not None:
        return stepped
    used: list[int] = []
    try:
        value = _eval(ast.parse(expr, mode="eval"), used)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError):
        return Score(0.0, "bad_expression", {"answer": expr})
    if sorted(used) != sorted(numbers):
        return Score(0.0, "wrong_numbers", {"answer": expr})
    if value != target:
        return Score(0.0, "wrong_value", {"answer": expr})
    return Score(1.0, "ok", {"answer": expr})


class CountdownScorer:
    """The built-in task's scorer: a pure function of response and reference (DESIGN §6)."""

    def __init__(self, **options):
        if options:
            raise ValueError(f"countdown scorer takes no options, got {sorted(options)}")

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Score]:
        return [verify(r, p.reference["numbers"], p.reference["target"]) for p, r in zip(prompts, responses)]
