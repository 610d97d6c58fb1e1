"""``longrl sft [--data SOURCE] [--model DIR] [--out DIR]``: the supervised warm-up on its own."""

from __future__ import annotations

from pathlib import Path


def add_arguments(p) -> None:
    from longrl.config import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--data", help="a JSONL/Parquet file, dataset folder or hf:NAME[:SPLIT] of prompt + "
                   "response (or completion, or chat messages); --set data.prompt_key=... / "
                   "data.response_key=... map other columns (default: built-in countdown traces)")
    p.add_argument("--model", help="local Hugging Face model folder (default: build the tiny model)")
    p.add_argument("--out", help="output model folder (default: runs/sft-<time>)")


def run(args) -> int:
    import time

    from longrl.config import load_config
    from longrl.errors import UserError

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"sft.data={args.data}")
    if args.model:
        overrides.append(f"model.path={args.model}")
    out = Path(args.out or f"runs/sft-{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / "config.json").exists():
        raise UserError(f"--out {out} already holds a model; choose another folder")
    overrides.append(f"sft.warm_dir={out}")
    overrides.append("sft.enabled=true")
    cfg = load_config(args.config, overrides)
    from longrl.models.loading import quiet_transformers
    from longrl.train.loop import warm_model_dir

    quiet_transformers()
    path = warm_model_dir(cfg, progress=not args.quiet)
    print(f"SFT model written to {path}")
    return 0
