"""Where the workers run (``cluster.backend``, DESIGN §7): one registry from a name to a factory.

A backend factory takes ``(cfg, model, tokenizer, start_dir)`` — the driver's policy, already
loaded from ``start_dir`` — places the driver's copy on its device and returns :class:`Workers`.
``local`` keeps everything in this process (:func:`longrl.train.loop.local_workers`); ``ray`` runs
trainer, rollout and reward worker groups on Ray (:func:`longrl.distributed.ray_cluster.ray_workers`).

Factories are imported by name only when asked for, so the single-process loop never imports the
Ray code and ``longrl.config`` can check ``cluster.backend`` against :func:`backend_names` without
importing any backend. No caller builds workers any other way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# backend -> "module:factory"
_BUILTIN: dict[str, str] = {
    "local": "longrl.train.loop:local_workers",
    "ray": "longrl.distributed.ray_cluster:ray_workers",
}


@dataclass
class Workers:
    """What a backend hands the trainer. Created by a backend factory, read by ``train`` and ``Trainer``."""

    engine: Any  # the rollout engine (RolloutEngine protocol): one in this process, or a Ray rollout group
    router: Any  # the scorer, (prompts, texts) -> list[Score]: a ScoreRouter or a Ray reward pool
    learner: Any = None  # None: the Trainer updates its own model; else a trainer group with update/sync_to
    release: Callable[[], None] | None = None  # frees what the backend holds beyond these (Ray: actors, Ray itself)

    def close(self) -> None:
        """Close the scorer, the engine (vLLM: its engine core) and the backend, each even if one fails."""
        try:
            self.router.close()
        finally:
            try:
                if hasattr(self.engine, "close"):
                    self.engine.close()
            finally:
                if self.release is not None:
                    self.release()


def backend_names() -> list[str]:
    return sorted(_BUILTIN)


def get_backend(name: str) -> Callable[[Any, Any, Any, Path], Workers]:
    """The factory of backend ``name``, imported now."""
    if name not in _BUILTIN:
        raise ValueError(f"unknown backend {name!r}; choose from {backend_names()}")
    module, attr = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_workers(cfg, model, tokenizer, start_dir: Path) -> Workers:
    """The workers of ``cluster.backend``; ``model`` is the driver's copy, loaded from ``start_dir``."""
    return get_backend(cfg.cluster.backend)(cfg, model, tokenizer, start_dir)
