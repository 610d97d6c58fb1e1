"""The public benchmark sets shipped inside longrl, and the one table that describes them.

The data files beside this module hold the rows of their upstream files unchanged. ``BENCHMARKS``
is the only description of them: ``longrl eval --list`` prints it and README.md here embeds
:func:`markdown_table` (a test keeps the two equal and checks every row count). The loaders in
:mod:`longrl.data.math` and :mod:`longrl.data.humaneval` find a file through
:func:`benchmark_file`; a user with their own copy passes ``data_dir`` (``longrl eval --data-dir``),
a folder holding the files under the same names.

    >>> BENCHMARKS["math500"].rows, benchmark_file("math500").name
    (500, 'math500.jsonl')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longrl.errors import UserError

# The shipped files live next to this module; pyproject.toml's package-data carries them into
# the wheel (a test checks its globs cover every file named below).
SHIPPED_DIR = Path(__file__).resolve().parent

# AIME and AMC are public competition problems; the licence known for these files is that of the
# repository they were copied from (README.md here says more).
QWEN_MATH = "competition problems, via Qwen2.5-Math (Apache-2.0)"


@dataclass(frozen=True)
class BenchmarkFile:
    """One shipped benchmark set. Written here; read by the loaders, ``eval --list`` and README.md."""

    name: str  # the ``--bench`` name
    file: str  # file name, beside this module or inside a --data-dir
    rows: int  # prompts in the file (each row is one prompt)
    task: str  # Prompt.task of its prompts, i.e. the scorer that grades them (DESIGN §6)
    title: str  # what the set is
    fields: str  # the fields of every row
    source: str  # upstream repository and path the file was copied from
    licence: str


BENCHMARKS: dict[str, BenchmarkFile] = {
    b.name: b
    for b in (
        BenchmarkFile(
            "math500", "math500.jsonl", 500, "math",
            "MATH-500, the test split of \"Let's Verify Step by Step\"",
            "problem, solution, answer, subject, level (1-5), unique_id",
            "openai/prm800k prm800k/math_splits/test.jsonl", "MIT",
        ),
        BenchmarkFile(
            "aime24", "aime24.jsonl", 30, "math", "AIME 2024 I and II",
            "id, problem, question, solution, answer, url",
            "QwenLM/Qwen2.5-Math evaluation/data/aime24", QWEN_MATH,
        ),
        BenchmarkFile(
            "amc23", "amc23.jsonl", 40, "math", "AMC 2023",
            "id, problem, question, answer (a float such as 27.0), url",
            "QwenLM/Qwen2.5-Math evaluation/data/amc23", QWEN_MATH,
        ),
        BenchmarkFile(
            "gsm8k", "gsm8k.jsonl", 1319, "math", "GSM8K test split",
            "question, answer (a worked solution ending in `#### N`), idx",
            "openai/grade-school-math grade_school_math/data/test.jsonl", "MIT",
        ),
        BenchmarkFile(
            "minerva_math", "minerva_math.jsonl", 272, "math", "Minerva Math, the OCW subset",
            "problem, solution (the answer is its last `\\boxed{}`), type, idx",
            "QwenLM/Qwen2.5-Math evaluation/data/minerva_math",
            "problems from MIT OpenCourseWare (CC BY-NC-SA 4.0); the collection as in Qwen2.5-Math (Apache-2.0)",
        ),
        BenchmarkFile(
            "humaneval", "humaneval.jsonl.gz", 164, "code", "HumanEval",
            "task_id, prompt, canonical_solution, test, entry_point",
            "openai/human-eval data/HumanEval.jsonl.gz", "MIT",
        ),
    )
}


def benchmark_file(name: str, data_dir: str | Path | None = None) -> Path:
    """The file of benchmark ``name``: the shipped copy, or the one in ``data_dir`` when given."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    meta = BENCHMARKS[name]
    if data_dir is None:
        path = SHIPPED_DIR / meta.file
        if not path.is_file():
            raise UserError(f"benchmark {name!r}: the shipped file {path} is missing; reinstall longrl")
        return path
    path = Path(data_dir) / meta.file
    if not path.is_file():
        raise UserError(
            f"benchmark {name!r}: {path} not found; --data-dir must hold {meta.file} "
            "(leave --data-dir out to use the copy shipped with longrl)"
        )
    return path


def markdown_table() -> str:
    """The file table of README.md here, one row per shipped benchmark."""
    lines = ["| file | `--bench` | rows | what | fields | origin | licence |", "|---" * 7 + "|"]
    for b in BENCHMARKS.values():
        repo, _, path = b.source.partition(" ")
        lines.append(
            f"| {b.file} | {b.name} | {b.rows} | {b.title} | {b.fields} | {repo} `{path}` | {b.licence} |"
        )
    return "\n".join(lines) + "\n"
