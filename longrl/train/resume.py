"""Resuming a run: its saved config, with overrides that may only change non-recipe fields."""

from __future__ import annotations

from pathlib import Path

from longrl.config import RunConfig, build, merge, parse_overrides, read_yaml
from longrl.errors import UserError

# Fields a resumed run may change: they do not alter what the run computes. The cluster's shape among
# them: a sharded (fsdp) checkpoint resumes from its shards into any number of trainer ranks, and
# from its Hugging Face files into a replicated group or the local backend; the update is the same to
# float rounding (tests/test_ray.py, tests/test_fsdp.py). cluster.mixed_precision stays: it changes the
# compute precision.
_FREE = ("rl.iterations", "checkpoint.", "loggers", "threads", "eval.every", "rollout.max_batch",
         "rl.micro_batch_tokens", "cluster.backend", "cluster.address", "cluster.trainer_workers",
         "cluster.rollout_workers", "cluster.reward_workers", "cluster.cpus_per_worker",
         "cluster.gpus_per_worker", "cluster.num_cpus", "cluster.sharding", "cluster.reshard_after_forward")


def resume_config(run_dir: Path, config: str | None, overrides: list[str]) -> RunConfig:
    saved = run_dir / "config.yaml"
    if not run_dir.is_dir() or not saved.is_file() or not (run_dir / "checkpoints").is_dir():
        raise UserError(f"--resume {run_dir}: not a run directory (needs config.yaml and checkpoints/)")
    if config is not None:
        raise UserError("--resume takes the run's own config.yaml; give changes with --set")
    tree = read_yaml(saved)
    changes = parse_overrides(overrides)
    flat_old, flat_new = _flatten(tree), _flatten(changes)
    conflicts = [k for k, v in flat_new.items()
                 if flat_old.get(k) != v and not any(k == f or k.startswith(f) for f in _FREE)
                 and k not in ("out", "name")]
    if conflicts:
        detail = ", ".join(f"{k}: {flat_old.get(k)!r} -> {flat_new[k]!r}" for k in conflicts)
        raise UserError(f"--resume {run_dir}: overrides conflict with the run's config ({detail}); "
                        "start a new run to change them")
    cfg = build(RunConfig, merge(tree, {k: v for k, v in changes.items() if k not in ("out", "name")}))
    cfg.validate()
    return cfg


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
