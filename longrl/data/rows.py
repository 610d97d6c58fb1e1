"""Reading row-oriented data files (JSONL, optionally gzipped; Parquet) with line-numbered validation.

One rule for bad rows (STYLE, Errors): stop and name the first few ``file:line: reason`` — unless
the caller passes ``skip_invalid=True``, in which case bad rows are skipped, counted, and written
to ``rejects_path`` (when given). Nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from longrl.errors import UserError

T = TypeVar("T")
_SHOWN = 5  # how many bad rows an error message lists


@dataclass
class Rejects:
    """Rows skipped under ``skip_invalid``: ``(line, reason, raw text)`` each."""

    rows: list[tuple[int, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def iter_raw_rows(path: str | Path) -> Iterator[tuple[int, str | None, dict | None]]:
    """Yield ``(line_number, error_or_None, row_or_None)`` for every non-blank row of a file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:  # pragma: no cover - depends on the install
            raise UserError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from e
        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield i, None, row
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield i, f"not valid JSON ({e.msg})", None
                continue
            if not isinstance(row, dict):
                yield i, f"expected a JSON object, got {type(row).__name__}", None
                continue
            yield i, None, row


def load_rows(
    path: str | Path,
    convert: Callable[[int, dict[str, Any]], T],
    *,
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
) -> tuple[list[T], Rejects]:
    """Read every row of ``path`` through ``convert(line, row)``.

    ``convert`` raises ``ValueError`` with a short reason for a bad row. Returns the converted
    rows and the rejects (empty unless ``skip_invalid``).
    """
    out: list[T] = []
    bad: list[tuple[int, str, str]] = []
    for line, err, row in iter_raw_rows(path):
        if err is None:
            try:
                out.append(convert(line, row))
                continue
            except (ValueError, KeyError, TypeError) as e:
                err = str(e) if not isinstance(e, KeyError) else f"missing field {e}"
        bad.append((line, err, json.dumps(row) if row is not None else ""))
    if bad and not skip_invalid:
        shown = "\n".join(f"  {path}:{line}: {reason}" for line, reason, _ in bad[:_SHOWN])
        more = f"\n  ... and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise UserError(
            f"{len(bad)} invalid row(s) in {path}:\n{shown}{more}\n"
            "(set data.skip_invalid=true to skip them and write them to a rejects file)"
        )
    rejects = Rejects(bad)
    if bad and rejects_path is not None:
        rejects_path = Path(rejects_path)
        rejects_path.parent.mkdir(parents=True, exist_ok=True)
        with open(rejects_path, "a", encoding="utf-8") as f:
            for line, reason, raw in bad:
                f.write(json.dumps({"file": str(path), "line": line, "reason": reason, "row": raw}) + "\n")
    return out, rejects
