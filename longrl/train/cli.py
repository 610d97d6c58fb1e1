"""``longrl train [CONFIG] [--set key=value ...] [--resume RUN_DIR]``."""

from __future__ import annotations

from pathlib import Path


def add_arguments(p) -> None:
    from longrl.config import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--out", help="parent folder for the run directory (same as --set out=...)")
    p.add_argument("--name", help="run directory name (same as --set name=...)")


def run(args) -> int:
    from longrl.config import load_config
    from longrl.train.loop import train

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out={args.out}")
    if args.name:
        overrides.append(f"name={args.name}")
    if args.resume:
        from longrl.train.resume import resume_config

        cfg = resume_config(Path(args.resume), args.config, overrides)
        train(cfg, resume_dir=Path(args.resume), progress=not args.quiet)
    else:
        train(load_config(args.config, overrides), progress=not args.quiet)
    return 0
