"""The benchmark registry of ``longrl eval``: name -> prompts (each carrying its scorer's task).

``countdown`` is built in; the math sets (math500, aime24, amc23, gsm8k, minerva_math) and
humaneval read the public files in the shared data folder (``$LONGRL_SHARED_DATA`` or
``../shared/data`` beside the checkout) and are graded by the math scorer and the code sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from longrl.errors import UserError
from longrl.types import Prompt


def _countdown(_: Path | None) -> list[Prompt]:
    from longrl.tasks.countdown import heldout_prompts

    return heldout_prompts()


def _registry() -> dict[str, tuple[Callable[[Path | None], list[Prompt]], bool]]:
    """name -> (loader, needs the shared data folder)."""
    from longrl.data.humaneval import CODE_BENCHMARKS
    from longrl.data.math import MATH_BENCHMARKS

    reg: dict[str, tuple[Callable, bool]] = {"countdown": (_countdown, False)}
    reg.update({name: (fn, True) for name, fn in MATH_BENCHMARKS.items()})
    reg.update({name: (fn, True) for name, fn in CODE_BENCHMARKS.items()})
    return reg


def benchmark_names() -> list[str]:
    return sorted(_registry())


def load_benchmark(name: str, data_dir: str | Path | None = None) -> list[Prompt]:
    from longrl.data.math import shared_data_dir

    reg = _registry()
    if name not in reg:
        raise UserError(f"unknown benchmark {name!r}; choose from {sorted(reg)}")
    loader, needs_data = reg[name]
    if needs_data:
        data_dir = Path(data_dir) if data_dir else shared_data_dir()
        if data_dir is None or not data_dir.is_dir():
            raise UserError(f"benchmark {name!r} reads the shared data folder; set LONGRL_SHARED_DATA "
                            "or pass --data-dir")
    return loader(data_dir)
