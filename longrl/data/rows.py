"""Reading row-oriented data (JSONL, optionally gzipped; Parquet; any dataset's rows) with validation.

One rule for bad rows (STYLE, Errors): stop and name the first few ``file:line: reason`` (or
``dataset[index]: reason``) — unless the caller passes ``skip_invalid=True``, in which case bad
rows are skipped, counted, and written to ``rejects_path`` (when given). Nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from longrl.errors import UserError

T = TypeVar("T")
_SHOWN = 5  # how many bad rows an error message lists


@dataclass
class Rejects:
    """Rows skipped under ``skip_invalid``: ``(position, reason, raw row)`` each, from one source.

    ``unit`` says what the position counts: ``line`` of a file (from 1) or ``index`` of a dataset
    (from 0, as ``dataset[i]`` reads it).
    """

    rows: list[tuple[int, str, str]] = field(default_factory=list)
    source: str = ""
    unit: str = "line"

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, position: int) -> str:
        return locate(self.source, self.unit, position)

    def write(self, path: str | Path) -> None:
        """One JSON line per reject, appended: ``{"file"|"dataset", "line"|"index", "reason", "row"}``."""
        if not self.rows:
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = "file" if self.unit == "line" else "dataset"
        with open(path, "a", encoding="utf-8") as f:
            for pos, reason, raw in self.rows:
                f.write(json.dumps({kind: self.source, self.unit: pos, "reason": reason, "row": raw}) + "\n")


def _unjson(value: Any) -> str:
    """A value JSON cannot hold, as a rejects file shows it: bytes (an image) by their size only."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    return str(value)


def locate(source: str, unit: str, position: int) -> str:
    """``file:line`` for a file, ``dataset[index]`` for a dataset."""
    return f"{source}:{position}" if unit == "line" else f"{source}[{position}]"


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
    return convert_rows(iter_raw_rows(path), convert, source=str(path), skip_invalid=skip_invalid,
                        rejects_path=rejects_path)


def convert_rows(
    rows: Iterable[tuple[int, str | None, dict | None]],
    convert: Callable[[int, dict[str, Any]], T],
    *,
    source: str,
    unit: str = "line",
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
) -> tuple[list[T], Rejects]:
    """:func:`load_rows` over ``(position, error_or_None, row_or_None)`` from any reader.

    ``source`` names the file or dataset in messages; ``unit`` is ``line`` (``file:3``) or
    ``index`` (``dataset[3]``).
    """
    out: list[T] = []
    rejects = Rejects([], source, unit)
    for pos, err, row in rows:
        if err is None:
            try:
                out.append(convert(pos, row))
                continue
            except (ValueError, KeyError, TypeError) as e:
                err = str(e) if not isinstance(e, KeyError) else f"missing field {e}"
        rejects.rows.append((pos, err, json.dumps(row, default=_unjson) if row is not None else ""))
    if rejects.rows and not skip_invalid:
        shown = "\n".join(f"  {rejects.where(pos)}: {reason}" for pos, reason, _ in rejects.rows[:_SHOWN])
        n = len(rejects)
        more = f"\n  ... and {n - _SHOWN} more" if n > _SHOWN else ""
        raise UserError(
            f"{n} invalid row(s) in {source}:\n{shown}{more}\n"
            "(set data.skip_invalid=true to skip them and write them to a rejects file)"
        )
    if rejects_path is not None:
        rejects.write(rejects_path)
    return out, rejects
