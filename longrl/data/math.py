"""Math prompt files and the math benchmarks shipped with longrl, as :class:`Prompt` lists.

A user's file is JSONL (optionally gzipped) or Parquet with one problem a row: ``problem`` (or
``question``) and ``answer`` are required; ``id``, ``level`` (an integer, or MATH's "Level 3") and
``difficulty`` (in [0, 1]) are optional. Bad rows follow the one rule of
:mod:`longrl.data.rows`: stop naming ``file:line``, or with ``skip_invalid=True`` skip, count and
write them to ``rejects_path``.

Difficulty (DESIGN §4): level L of n levels maps to (L - 1)/(n - 1); MATH has n = 5, a user file
has as many levels as its largest label. ``Prompt.level`` keeps the integer.

    >>> import json, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "p.jsonl")
    >>> _ = open(path, "w").write(json.dumps({"problem": "2+2?", "answer": 4, "level": 2}) + "\\n")
    >>> p = load_math_file(path)[0]
    >>> p.id, p.reference, p.task, p.level
    ('p:1', '4', 'math', 2)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from longrl.data.benchmarks import benchmark_file
from longrl.data.rows import load_rows
from longrl.errors import UserError
from longrl.rewards.math_extract import reference_answer
from longrl.types import Prompt

# The instruction appended to every problem; the extractor reads the last \boxed{} (DESIGN §6).
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
MATH_LEVELS = 5  # MATH (and MATH-500) label problems Level 1 .. Level 5
_LEVEL = re.compile(r"^\s*(?:level\s*)?(\d+)\s*$", re.IGNORECASE)


def render_math_prompt(problem: str) -> str:
    """The text the policy sees: the problem, then the answer-format instruction.

    >>> render_math_prompt("What is 2+2?").endswith("within \\\\boxed{}.")
    True
    """
    return f"{problem.strip()}\n\n{INSTRUCTION}"


def level_difficulty(level: int, levels: int) -> float:
    """Level L of n levels -> (L - 1)/(n - 1), clipped to [0, 1]; 0 when there is one level.

    >>> [level_difficulty(L, 5) for L in (1, 3, 5)]
    [0.0, 0.5, 1.0]
    """
    if levels <= 1:
        return 0.0
    return min(1.0, max(0.0, (level - 1) / (levels - 1)))


def _parse_level(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"'level' must be an integer, got {value!r}")
    if isinstance(value, int):
        level = value
    elif isinstance(value, float) and value.is_integer():
        level = int(value)
    else:
        m = _LEVEL.match(str(value))
        if m is None:
            raise ValueError(f"'level' must be an integer such as 3 or 'Level 3', got {value!r}")
        level = int(m.group(1))
    if level < 1:
        raise ValueError(f"'level' must be >= 1, got {level}")
    return level


def _text_field(row: dict[str, Any], *names: str) -> str:
    for name in names:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value
    raise ValueError(f"missing or empty {' / '.join(repr(n) for n in names)}")


def make_math_prompt(
    pid: str,
    problem: str,
    answer: Any,
    source: str,
    *,
    level: int | None = None,
    levels: int | None = None,
    difficulty: float | None = None,
    **tags: Any,
) -> Prompt:
    """One ``task="math"`` prompt; ``answer`` is reduced to the final answer (GSM8K's ``#### N``)."""
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise ValueError("missing or empty 'answer'")
    reference = reference_answer(answer)
    if not reference:
        raise ValueError(f"'answer' {answer!r} holds no final answer")
    if difficulty is None:
        difficulty = level_difficulty(level, levels or MATH_LEVELS) if level is not None else 0.0
    return Prompt(
        id=pid,
        text=render_math_prompt(problem),
        reference=reference,
        task="math",
        difficulty=float(difficulty),
        level=level,
        tags={"source": source, "problem": problem, **tags},
    )


def load_math_file(
    path: str | Path, *, skip_invalid: bool = False, rejects_path: str | Path | None = None
) -> list[Prompt]:
    """Load a user's math prompt file (see the module docstring for its fields)."""
    path = Path(path)
    stem = path.name.split(".")[0]

    def convert(line: int, row: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        _text_field(row, "problem", "question")
        if row.get("answer") is None or (isinstance(row["answer"], str) and not row["answer"].strip()):
            raise ValueError("missing or empty 'answer'")
        reference_answer(row["answer"])  # a list or dict answer is a bad row, named here
        level = _parse_level(row.get("level"))
        difficulty = row.get("difficulty")
        if difficulty is not None and (
            isinstance(difficulty, bool)
            or not isinstance(difficulty, (int, float))
            or not 0 <= difficulty <= 1
        ):
            raise ValueError(f"'difficulty' must be a number in [0, 1], got {difficulty!r}")
        return line, {**row, "level": level}

    rows, _ = load_rows(path, convert, skip_invalid=skip_invalid, rejects_path=rejects_path)
    levels = max((r["level"] for _, r in rows if r["level"] is not None), default=1)
    prompts = []
    seen: dict[str, int] = {}
    for line, row in rows:
        pid = str(row["id"]) if row.get("id") is not None else f"{stem}:{line}"
        if pid in seen:
            raise UserError(f"{path}:{line}: id {pid!r} repeats line {seen[pid]}; ids must be unique")
        seen[pid] = line
        prompts.append(
            make_math_prompt(
                pid,
                _text_field(row, "problem", "question"),
                row["answer"],
                str(path),
                level=row["level"],
                levels=levels,
                difficulty=row.get("difficulty"),
            )
        )
    return prompts


BenchmarkLoader = Callable[[str | Path | None], list[Prompt]]


def _loader(name: str, build: Callable[[int, dict[str, Any]], Prompt]) -> BenchmarkLoader:
    def load(data_dir: str | Path | None = None) -> list[Prompt]:
        prompts, _ = load_rows(benchmark_file(name, data_dir), build)
        return prompts

    load.__doc__ = f"Load the {name} benchmark: the shipped file, or the one in ``data_dir``."
    return load


def _math500(line: int, row: dict[str, Any]) -> Prompt:
    level = _parse_level(row.get("level"))
    return make_math_prompt(
        f"math500:{row['unique_id']}",
        row["problem"],
        row["answer"],
        "math500",
        level=level,
        levels=MATH_LEVELS,
        subject=row.get("subject"),
        solution=row.get("solution"),
    )


def _aime24(line: int, row: dict[str, Any]) -> Prompt:
    return make_math_prompt(f"aime24:{row['id']}", row["problem"], row["answer"], "aime24")


def _amc23(line: int, row: dict[str, Any]) -> Prompt:
    return make_math_prompt(
        f"amc23:{row['id']}", _text_field(row, "problem", "question"), row["answer"], "amc23"
    )


def _gsm8k(line: int, row: dict[str, Any]) -> Prompt:
    # The answer field is a worked solution ending in "#### N"; the reference is N.
    return make_math_prompt(
        f"gsm8k:{row['idx']}", row["question"], row["answer"], "gsm8k", solution=row["answer"]
    )


def _minerva(line: int, row: dict[str, Any]) -> Prompt:
    # No answer field: the reference is the last \boxed{} of the solution.
    return make_math_prompt(
        f"minerva_math:{row['idx']}",
        row["problem"],
        row["solution"],
        "minerva_math",
        solution=row["solution"],
    )


MATH_BENCHMARKS: dict[str, BenchmarkLoader] = {
    "math500": _loader("math500", _math500),
    "aime24": _loader("aime24", _aime24),
    "amc23": _loader("amc23", _amc23),
    "gsm8k": _loader("gsm8k", _gsm8k),
    "minerva_math": _loader("minerva_math", _minerva),
}


def load_math_benchmark(name: str, data_dir: str | Path | None = None) -> list[Prompt]:
    """Load benchmark ``name``: the copy shipped with longrl, or the file in ``data_dir`` if given.

    >>> len(load_math_benchmark("aime24"))
    30
    >>> load_math_benchmark("math5000")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    longrl.errors.UserError: unknown math benchmark 'math5000'; choose from ['aime24', 'amc23', ...]
    """
    if name not in MATH_BENCHMARKS:
        raise UserError(f"unknown math benchmark {name!r}; choose from {sorted(MATH_BENCHMARKS)}")
    return MATH_BENCHMARKS[name](data_dir)
