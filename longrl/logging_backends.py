"""Where per-iteration metrics go: always ``metrics.jsonl``, optionally TensorBoard and wandb.

``metrics.jsonl`` is the record of truth (DESIGN §10; ``longrl report`` reads it): one JSON object
a line, flushed after every line so a crash loses at most the line being written. The other
backends are mirrors for people who watch runs in those tools; they are imported only when asked
for, and asking for one that is not installed is a user error that says what to install.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from longrl.errors import UserError

BACKENDS = ("jsonl", "tensorboard", "wandb")  # "jsonl" is always on; naming it is allowed


def _plain(v: Any) -> Any:
    """``v`` as a value strict JSON can hold: tensor / numpy scalars via ``.item()``, and
    non-finite floats as ``null`` (NaN is not JSON, and a strict reader would reject the line)."""
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (ValueError, RuntimeError):  # a tensor / array with more than one element
            v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "iter"}


class MetricsLogger:
    """Appends one JSON line per :meth:`log` call to ``run_dir/metrics.jsonl`` and mirrors scalars.

    Args:
        run_dir: the run directory (created if missing).
        backends: extra mirrors among ``"tensorboard"`` (event files under ``run_dir/tb``) and
            ``"wandb"`` (offline unless ``WANDB_MODE`` is already set; files under ``run_dir``).
        config: optional resolved config, passed to wandb's run config.

    Appending, not truncating, is what a resumed run needs. If the file ends in a truncated line
    (the previous process died mid-write), a newline is written first so that line stays alone and
    the report skips it, instead of gluing it to the next record.
    """

    def __init__(self, run_dir: Path, backends: list[str], config: Mapping[str, Any] | None = None):
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown:
            raise UserError(f"unknown metrics backend(s) {unknown}; choose from {list(BACKENDS)}")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = self._open_tensorboard() if "tensorboard" in backends else None
        try:
            self._wandb = self._open_wandb(config) if "wandb" in backends else None
        except BaseException:
            if self._tb is not None:  # leave no open writer behind a failed construction
                self._tb.close()
            raise
        needs_newline = self.path.is_file() and self.path.stat().st_size > 0 and not self._ends_with_newline()
        # held open for the whole run (one append stream); close() closes it
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if needs_newline:
            self._file.write("\n")
            self._file.flush()

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _open_tensorboard(self):
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it but imports it late)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise UserError(
                f"the tensorboard metrics backend needs the tensorboard package: pip install tensorboard ({e})"
            ) from None
        return SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def _open_wandb(self, config: Mapping[str, Any] | None):
        try:
            import wandb
        except ImportError:
            raise UserError("the wandb metrics backend needs the wandb package: pip install wandb") from None
        # Offline by default: runs must not need a network or an account; `wandb sync` uploads later.
        os.environ.setdefault("WANDB_MODE", "offline")
        return wandb.init(project="longrl", name=self.run_dir.name, dir=str(self.run_dir),
                          config=dict(config) if config else None)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write ``{"iter": step, **metrics}`` as one line (flushed) and mirror its numbers at ``step``."""
        record = {"iter": int(step), **{str(k): _plain(v) for k, v in metrics.items() if k != "iter"}}
        self._file.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        self._file.flush()
        scalars = _scalars(record)
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, global_step=int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))

    def close(self) -> None:
        """Flush and close every backend; safe to call twice."""
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
