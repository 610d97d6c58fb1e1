"""Atomic checkpoints: Hugging Face model files + trainer state, with a ``latest`` pointer.

``checkpoints/iter_N`` is a Hugging Face model folder (config.json, model.safetensors, tokenizer:
``from_pretrained`` loads it) with ``trainer_state.json`` beside it. A sharded trainer group
(``cluster.sharding=fsdp``) also writes its ranks' shards of the weights into ``iter_N/sharded/``
(``torch.distributed.checkpoint``: :func:`longrl.distributed.fsdp.save_shards`); a sharded run resumes
from them into any number of ranks, and every other run (replicate, local) from the Hugging Face
files. Both hold the same weights: the export is written from the driver's copy of the policy, which
the weight sync after every update sets to the trainer's gathered weights.

A checkpoint is written to a temporary folder, renamed into place with ``os.replace``, and only
then is the ``latest`` pointer replaced (also via a temporary file). A kill at any instant leaves
either the previous checkpoint or the new one as ``latest``, never a broken one. The optimizer is
not saved: the k1.5 update resets it at the start of every iteration.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longrl.errors import UserError

STATE = "trainer_state.json"
LATEST = "latest"
SHARDED = "sharded"  # iter_N/sharded: the trainer ranks' DCP shards (cluster.sharding=fsdp)


def rng_state() -> dict[str, Any]:
    return {
        "python": _jsonable(random.getstate()),
        "numpy": _jsonable(np.random.get_state()),
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], np.array(npy[1], dtype=np.uint32), npy[2], npy[3], npy[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def _jsonable(x: Any) -> Any:
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.integer):
        return int(x)
    return x


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_checkpoint(ckpt_root: Path, iteration: int, model, tokenizer, state: dict[str, Any],
                    keep: int, extra: dict[str, Any] | None = None, processor=None,
                    shards: Callable[[Path], None] | None = None) -> Path:
    """Write ``ckpt_root/iter_N`` atomically, point ``latest`` at it, prune to ``keep``; a
    vision-language model's ``processor`` goes with it. ``shards`` (a sharded trainer group's
    ``save_shards``) writes the ranks' shards into the folder it is given, ``iter_N/sharded``."""
    from longrl.models.loading import save_model

    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"iter_{iteration}"
    tmp = ckpt_root / f".tmp-iter_{iteration}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if shards is not None:
            shards(tmp / SHARDED)
        save_model(model, tokenizer, tmp, extra=extra, processor=processor)
        (tmp / STATE).write_text(json.dumps(state))
        for folder, _, files in os.walk(tmp):  # the shards' files and folder too
            for f in files:
                with open(Path(folder) / f, "rb") as fh:
                    os.fsync(fh.fileno())
            _fsync_dir(Path(folder))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # e.g. a rank died mid-write: the previous checkpoint stays latest
        raise
    if final.exists():  # re-saving the same iteration (e.g. after a resume): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_root)
    write_text_atomic(ckpt_root / LATEST, final.name)
    _prune(ckpt_root, keep, final.name)
    return final


def _prune(ckpt_root: Path, keep: int, latest: str) -> None:
    done = sorted((p for p in ckpt_root.glob("iter_*") if p.is_dir()), key=lambda p: int(p.name[5:]))
    for p in done[:-keep] if keep > 0 else []:
        if p.name != latest:
            shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_root.glob(".tmp-iter_*"):  # leftovers of a killed save
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / LATEST
    if not pointer.is_file():
        return None
    path = ckpt_root / pointer.read_text().strip()
    if not (path / STATE).is_file():
        raise UserError(f"{pointer} points to {path}, which is not a complete checkpoint")
    return path


def sharded_weights(ckpt: Path) -> Path | None:
    """``ckpt``'s folder of trainer shards, or None when it has none (a replicated or local run's
    checkpoint, or a plain model folder)."""
    folder = Path(ckpt) / SHARDED
    return folder if (folder / ".metadata").is_file() else None


def load_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE).read_text())
