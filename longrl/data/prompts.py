"""Prompt files and SFT files (JSONL or Parquet), validated row by row.

Prompt rows: ``prompt`` (or ``problem``), a reference in ``answer`` (or ``reference`` / ``tests``),
optional ``id``, ``task`` (the scorer; default ``math``), ``level`` (integer difficulty label) or
``difficulty`` (already in [0, 1]), and ``pass_rate`` (curation's estimate in [0, 1]: the prioritized
sampler's success rate of a prompt not yet tried). SFT rows: ``prompt`` and ``response``.
"""

from __future__ import annotations

from pathlib import Path

from longrl.data.rows import load_rows
from longrl.types import Prompt


def _prompt_row(path: Path, default_task: str):
    def convert(line: int, row: dict) -> Prompt:
        text = row.get("prompt", row.get("problem"))
        if not isinstance(text, str) or not text.strip():
            raise ValueError("missing 'prompt' (or 'problem') text")
        ref = next((row[k] for k in ("answer", "reference", "tests") if row.get(k) not in (None, "")), None)
        if ref is None:
            raise ValueError("missing the reference: 'answer', 'reference' or 'tests'")
        level = row.get("level")
        if level is not None and not isinstance(level, int):
            raise ValueError(f"'level' must be an integer, got {level!r}")
        diff = row.get("difficulty", 0.0)
        if not isinstance(diff, (int, float)) or not 0 <= diff <= 1:
            raise ValueError(f"'difficulty' must be a number in [0, 1], got {diff!r}")
        rate = row.get("pass_rate")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1):
            raise ValueError(f"'pass_rate' must be a number in [0, 1], got {rate!r}")
        return Prompt(id=str(row.get("id", f"{path.stem}-{line}")), text=text, reference=ref,
                      task=str(row.get("task", default_task)), difficulty=float(diff), level=level,
                      pass_rate=None if rate is None else float(rate))

    return convert


def load_prompt_file(path: Path, *, default_task: str = "math", skip_invalid: bool = False,
                     rejects_path: Path | None = None) -> list[Prompt]:
    prompts, _ = load_rows(path, _prompt_row(path, default_task), skip_invalid=skip_invalid,
                           rejects_path=rejects_path)
    levels = sorted({p.level for p in prompts if p.level is not None})
    if len(levels) > 1:  # level L of n levels -> (L - 1) / (n - 1)  (DESIGN §4)
        rank = {lv: i for i, lv in enumerate(levels)}
        for p in prompts:
            if p.level is not None:
                p.difficulty = rank[p.level] / (len(levels) - 1)
    return prompts


def _sft_row(line: int, row: dict) -> tuple[str, str]:
    p, r = row.get("prompt"), row.get("response")
    if not isinstance(p, str) or not isinstance(r, str):
        raise ValueError("needs string fields 'prompt' and 'response'")
    if not r.strip():
        raise ValueError("empty 'response'")
    return p, r


def load_sft_file(path: Path, *, skip_invalid: bool = False, rejects_path: Path | None = None
                  ) -> list[tuple[str, str]]:
    rows, _ = load_rows(path, _sft_row, skip_invalid=skip_invalid, rejects_path=rejects_path)
    if not rows:
        from longrl.errors import UserError

        raise UserError(f"{path}: no examples")
    return rows
