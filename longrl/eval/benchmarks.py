"""The benchmark registry of ``longrl eval``: name -> prompts (each carrying its scorer's task).

The built-in tasks' held-out sets are built in (:mod:`longrl.tasks.registry`: ``countdown``, and
for vision-language models its drawn twin ``countdown_image`` and ``scenes``); the math sets
(math500, aime24, amc23, gsm8k, minerva_math) and humaneval ship with longrl
(:mod:`longrl.data.benchmarks`, which describes each file) and are graded by the math scorer and
the code sandbox. ``data_dir`` points the shipped sets at a user's own copy of the files instead.

    >>> benchmark_names()[:3]
    ['aime24', 'amc23', 'countdown']
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from longrl.errors import UserError
from longrl.types import Prompt


def _builtin(name: str) -> Callable[[str | Path | None], list[Prompt]]:
    """A built-in task's held-out set at its default size (``data_dir`` does not apply)."""
    from longrl.tasks.registry import get_task

    return lambda _=None: get_task(name).heldout_prompts()


def _registry() -> dict[str, Callable[[str | Path | None], list[Prompt]]]:
    from longrl.data.humaneval import CODE_BENCHMARKS
    from longrl.data.math import MATH_BENCHMARKS
    from longrl.tasks.registry import task_names

    return {**{name: _builtin(name) for name in task_names()}, **MATH_BENCHMARKS, **CODE_BENCHMARKS}


def benchmark_names() -> list[str]:
    return sorted(_registry())


def load_benchmark(name: str, data_dir: str | Path | None = None) -> list[Prompt]:
    """The prompts of benchmark ``name``; ``data_dir`` replaces the shipped files (not the built-in tasks')."""
    reg = _registry()
    if name not in reg:
        raise UserError(f"unknown benchmark {name!r}; choose from {sorted(reg)}")
    return reg[name](data_dir)


def benchmark_table() -> list[dict[str, str | int]]:
    """One row per benchmark, for ``longrl eval --list``: name, prompts, task, source, licence."""
    from longrl.data.benchmarks import BENCHMARKS
    from longrl.tasks.registry import get_task, task_names

    rows: list[dict[str, str | int]] = [
        {"name": name, "prompts": len(get_task(name).heldout_prompts()), "task": name,
         "source": get_task(name).source, "licence": "Apache-2.0 (part of longrl)"}
        for name in task_names()
    ]
    rows += [{"name": b.name, "prompts": b.rows, "task": b.task, "source": b.source, "licence": b.licence}
             for b in BENCHMARKS.values()]
    return sorted(rows, key=lambda r: str(r["name"]))


def format_benchmark_table() -> str:
    """:func:`benchmark_table` as aligned text columns."""
    cols = ("name", "prompts", "task", "source", "licence")
    rows = [cols] + [tuple(str(r[c]) for c in cols) for r in benchmark_table()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)
