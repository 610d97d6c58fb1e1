"""The ``longrl`` command line: one verb per pipeline stage (DESIGN §1).

Each verb lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their verb runs, so ``longrl --help`` stays fast. A
:class:`~longrl.errors.UserError` prints one line and exits with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "curate": ("longrl.data.curate.cli", "build an RL prompt set: format, dedup, decontamination, difficulty, hack filter"),
    "train": ("longrl.train.cli", "RL training (the quickstart when no config is given)"),
    "warmup-data": ("longrl.data.warmup_cli", "long-CoT warm-up data by rejection sampling from a teacher"),
    "sft": ("longrl.train.sft_cli", "supervised long-CoT warm-up"),
    "long2short": ("longrl.long2short.cli", "merge, shortest rejection sampling, DPO, long2short RL, compare"),
    "eval": ("longrl.eval.cli", "evaluate a model on a benchmark"),
    "report": ("longrl.report", "plots and an HTML page from a run directory"),
    "sandbox": ("longrl.rewards.sandbox.cli", "run or serve the code-execution sandbox"),
    "rewards": ("longrl.eval.rewards_check", "rewards check: score responses with the configured rewards (a dry run)"),
}


def _load(verb: str):
    return importlib.import_module(COMMANDS[verb][0])


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longrl", description="Kimi k1.5-style RL for reasoning LLMs.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == verb:
            _load(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from longrl.errors import UserError, WorkerFailed

    argv = sys.argv[1:] if argv is None else argv
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb not in COMMANDS:
        verb = None
    try:
        args = build_parser(verb).parse_args(argv)
        if args.verb is None:
            build_parser().print_help()
            return 0
        return int(_load(args.verb).run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WorkerFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
