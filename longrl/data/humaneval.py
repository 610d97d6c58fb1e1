"""Code prompts: the HumanEval benchmark loader and the loader for user code prompt files.

Both produce ``Prompt(task="code")`` whose ``reference`` the code scorer reads (format in
:mod:`longrl.rewards.sandbox.harness`). ``CODE_BENCHMARKS`` maps a benchmark name to its loader,
for ``longrl eval --bench humaneval``; HumanEval ships with longrl (:mod:`longrl.data.benchmarks`).

User prompt file (JSONL, optionally gzipped), one problem a line::

    {"id": "a+b", "prompt": "Read two integers and print their sum.",
     "tests": [{"input": "1 2\\n", "output": "3\\n"}], "time_limit": 2, "memory_mb": 256}
    {"id": "add", "prompt": "Write add(a, b).", "test": "assert add(1, 2) == 3", "entry_point": "add"}

Optional fields: ``prefix`` (code run before the response's, assert-style only), ``language``
(``python`` | ``cpp``: used when the response's code block names none), ``level`` /
``difficulty``, ``tags``. Malformed rows stop with ``file:line: reason`` (``skip_invalid``
skips and records them, see :mod:`longrl.data.rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from longrl.data.benchmarks import benchmark_file
from longrl.data.rows import load_rows
from longrl.types import Prompt

HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Think it through, then give the complete function "
    "(with its imports and any helper functions) in one ```python code block at the end.\n\n"
)
_REF_FIELDS = ("tests", "test", "entry_point", "prefix", "language", "time_limit", "memory_mb")


def _humaneval_row(line: int, row: dict[str, Any]) -> Prompt:
    from longrl.rewards.sandbox.harness import parse_reference

    for k in ("task_id", "prompt", "test", "entry_point"):
        if not isinstance(row.get(k), str):
            raise ValueError(f"missing or non-text field {k!r}")
    ref = {"test": row["test"], "entry_point": row["entry_point"], "prefix": row["prompt"]}
    parse_reference(ref)
    text = HUMANEVAL_INSTRUCTION + "```python\n" + row["prompt"] + "```"
    return Prompt(id=row["task_id"], text=text, reference=ref, task="code", tags={"source": "humaneval"})


def load_humaneval(data_dir: str | Path | None = None) -> list[Prompt]:
    """The 164 HumanEval problems (openai/human-eval): the shipped copy, or ``data_dir``'s.

    >>> len(load_humaneval())
    164
    """
    prompts, _ = load_rows(benchmark_file("humaneval", data_dir), _humaneval_row)
    return prompts


CODE_BENCHMARKS: dict[str, Callable[[str | Path | None], list[Prompt]]] = {"humaneval": load_humaneval}


def _code_row(line: int, row: dict[str, Any]) -> Prompt:
    from longrl.rewards.sandbox.harness import parse_reference

    pid = row.get("id", f"line{line}")
    text = row.get("prompt", row.get("text"))
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing 'prompt' (the problem statement)")
    ref = {k: row[k] for k in _REF_FIELDS if k in row}
    parse_reference(ref)  # ValueError names what is wrong; load_rows adds file:line
    level = row.get("level")
    if level is not None and not isinstance(level, int):
        raise ValueError("'level' must be an integer")
    diff = row.get("difficulty", 0.0)
    if not isinstance(diff, (int, float)) or not 0.0 <= diff <= 1.0:
        raise ValueError("'difficulty' must be a number in [0, 1]")
    tags = row.get("tags", {})
    if not isinstance(tags, dict):
        raise ValueError("'tags' must be an object")
    return Prompt(id=str(pid), text=text, reference=ref, task="code", difficulty=float(diff), level=level,
                  tags=tags)


def load_code_prompts(path: str | Path, *, skip_invalid: bool = False,
                      rejects_path: str | Path | None = None) -> list[Prompt]:
    """Read a user code prompt file (format above) into ``Prompt(task="code")``."""
    prompts, _ = load_rows(path, _code_row, skip_invalid=skip_invalid, rejects_path=rejects_path)
    return prompts
