"""What long2short writes: model folders with a lineage record, staged so nothing is left half-done.

Lineage lives in each checkpoint's ``longrl.json``. The records written elsewhere in longrl are
read as they are: the warm-up writes ``{"stage": "sft", "base": <model.path or "tiny">}`` and an RL
checkpoint ``{"stage": "rl", "warm": <start folder>}``. long2short stages write
``{"stage": ..., "parent": <folder>, "root": <earliest known ancestor>}`` (a merge has two
``parents``). :func:`ancestry` follows these links, so a merge can tell whether its two inputs
descend from one base checkpoint, as k1.5 §2.4 assumes (the short model is fine-tuned from the long
model's SFT start).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from longrl.errors import UserError

RECORD = "longrl.json"
_MAX_DEPTH = 64  # a longer chain means a cycle in hand-edited records


def read_record(model_dir: str | Path) -> dict:
    """The ``longrl.json`` of a model folder, or ``{}`` when it has none (e.g. a downloaded model)."""
    path = Path(model_dir) / RECORD
    if not path.is_file():
        return {}
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg})") from e
    return rec if isinstance(rec, dict) else {}


def _locate(ref: str, seen_from: Path) -> str:
    """A recorded folder as an absolute path when it can be found, else the string as recorded.

    Recorded paths may be relative to the directory the recording command ran in (RL checkpoints
    store the warm folder as given, e.g. ``runs/_warm/<key>``): try the current directory, then
    each ancestor of the folder that holds the record.
    """
    p = Path(ref)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, *(a / p for a in seen_from.resolve().parents)]
    for c in candidates:
        if (c / "config.json").is_file():
            return str(c.resolve())
    return ref


def _parents(model_dir: Path, rec: dict) -> list[str]:
    if "parents" in rec:
        refs = list(rec["parents"])
    elif "parent" in rec:
        refs = [rec["parent"]]
    elif rec.get("stage") == "rl" and rec.get("warm"):
        refs = [rec["warm"]]
    elif rec.get("stage") == "sft" and rec.get("base") not in (None, "tiny"):
        refs = [rec["base"]]
    else:
        refs = []
    return [_locate(str(r), model_dir) for r in refs]


def ancestry(model_dir: str | Path) -> list[str]:
    """This folder and every ancestor reachable through the lineage records, nearest first."""
    start = str(Path(model_dir).resolve())
    out, todo = [], [start]
    while todo and len(out) < _MAX_DEPTH:
        cur = todo.pop(0)
        if cur in out:
            continue
        out.append(cur)
        if Path(cur).is_dir():
            rec = read_record(cur)
            todo.extend(_parents(Path(cur), rec))
            if rec.get("root") and rec["root"] not in out:
                todo.append(str(rec["root"]))
    return out


def root_of(model_dir: str | Path, _depth: int = 0) -> str:
    """The earliest known ancestor: a recorded ``root``, else the end of the first-parent chain."""
    cur = Path(model_dir)
    rec = read_record(cur)
    if rec.get("root"):
        return str(rec["root"])
    parents = _parents(cur, rec)
    if not parents:
        return str(cur.resolve())
    if not Path(parents[0]).is_dir() or _depth >= _MAX_DEPTH:
        return parents[0]  # as recorded: the ancestor is not on this machine
    return root_of(parents[0], _depth + 1)


def child_record(stage: str, parent: str | Path, **extra) -> dict:
    """The ``longrl.json`` of a model made from ``parent`` by a long2short stage."""
    return {"stage": stage, "parent": str(Path(parent).resolve()), "root": root_of(parent), **extra}


def check_model_dir(path: str | Path, flag: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{flag} {path}: not a Hugging Face model folder (no config.json)")
    return path


def check_new_output(out: str | Path, flag: str = "--out") -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{flag} {out} already exists and is not empty; choose another folder")
    return out


@contextlib.contextmanager
def staged_output(out: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Write into a temporary sibling folder, renamed to ``out`` only when the block succeeds.

    ``out`` must be new or empty, unless ``replace`` (a verb's ``--force``): then an existing
    ``out`` is replaced whole once the new one is complete.
    """
    out = Path(out) if replace else check_new_output(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.replace(old)
        tmp.replace(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.replace(out)


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
