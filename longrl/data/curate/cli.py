"""``longrl curate --in FILE|hf:NAME|countdown --out DIR [--model DIR] [--set curate.x=y ...]``.

The k1.5 §2.1 funnel (stages in :mod:`longrl.data.curate.pipeline`). Everything is checked before
anything is written: the config, the input (every row), the model folder, the decontamination
files. Running the same command again on the same ``--out`` continues a killed run: prompts
whose samples are recorded are not sampled again.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("config", nargs="?", help="YAML file with curate / data / model / rewards sections (optional)")
    p.add_argument("--in", dest="source", required=True,
                   help="prompt file (JSONL/Parquet), hf:NAME[:SPLIT], a dataset folder, or countdown")
    p.add_argument("--out", required=True, help="output folder (kept.jsonl, rejected.jsonl, the report)")
    p.add_argument("--model", help="local Hugging Face model folder for the difficulty and hack stages")
    p.add_argument("--chat-template", action="store_true", help="wrap prompts with the model's chat template")
    p.add_argument("--decontaminate", nargs="+", default=[], metavar="FILE",
                   help="more prompt files to decontaminate against (besides every shipped benchmark)")
    p.add_argument("--limit", type=int, help="curate only the first N prompts (countdown: draw N; default 512)")
    p.add_argument("--restart", action="store_true", help="discard the recorded samples of an earlier run in --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set curate.n=16 --set curate.hack_filter=false (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def load_run(config: str | None, overrides: list[str], model: str | None, chat_template: bool):
    from longrl.config import build, merge, parse_overrides, read_yaml
    from longrl.data.curate.pipeline import CurateRun
    from longrl.errors import UserError

    if config and not Path(config).is_file():
        raise UserError(f"config {config}: no such file")
    tree = read_yaml(Path(config)) if config else {}
    if model:
        tree = merge(tree, {"model": {"path": model}})
    if chat_template:
        tree = merge(tree, {"model": {"chat_template": True}})
    run = build(CurateRun, merge(tree, parse_overrides(overrides)))
    run.validate()
    return run


def _sampling_identity(run, source: str, digest: str) -> dict:
    c = run.curate
    return {"input": source, "input_digest": digest, "model": run.model.path, "dtype": run.model.dtype,
            "chat_template": run.model.chat_template, "engine": c.engine, "seed": c.seed,
            "difficulty": [c.n, c.temperature, c.max_tokens], "hack": [c.hack_n, c.hack_temperature, c.hack_max_tokens]}


def _check_state(state_dir: Path, ident: dict, restart: bool) -> None:
    """A state folder from another input, model or sampling setting is refused (or wiped with --restart)."""
    from longrl.errors import UserError

    path, samples = state_dir / "run.json", state_dir / "samples.jsonl"
    if restart:
        shutil.rmtree(state_dir, ignore_errors=True)
    elif path.is_file() and samples.is_file() and samples.stat().st_size:
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: unreadable ({e.msg}); use --restart to discard the earlier samples") from e
        diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
        if diff:
            raise UserError(f"{state_dir.parent} holds samples of an earlier curation with other {', '.join(diff)}; "
                            "use another --out, or --restart to discard them")
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ident, indent=2))


def run(args) -> int:
    from longrl.config import to_dict
    from longrl.data.curate.pipeline import (
        STATE_DIR, input_digest, load_input, model_stages, reference_file_prompts, rule_stages, write_outputs,
    )
    from longrl.errors import UserError

    t0 = time.time()
    cfg = load_run(args.config, args.overrides, args.model, args.chat_template)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: must be at least 1")
    if cfg.curate.uses_model and cfg.model.path is None:
        raise UserError("the difficulty and hack stages need --model DIR (a local Hugging Face model folder); "
                        "or turn them off: --set curate.difficulty=false --set curate.hack_filter=false")
    if cfg.curate.uses_model and not (Path(cfg.model.path) / "config.json").is_file():
        raise UserError(f"--model {cfg.model.path}: not a Hugging Face model folder (no config.json there)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    inputs, skipped = load_input(args.source, cfg.data, args.limit, cfg.curate.seed)
    if cfg.curate.uses_model:
        from longrl.rewards.compose import check_tasks

        check_tasks(cfg.rewards, {p.task for p in inputs})  # every prompt's task has a verifier
    extra_refs = reference_file_prompts(args.decontaminate) if cfg.curate.decontaminate else {}
    say = (lambda *a: None) if args.quiet else print
    say(f"curating {len(inputs)} prompts from {args.source}")

    out.mkdir(parents=True, exist_ok=True)
    state_dir = out / STATE_DIR
    _check_state(state_dir, _sampling_identity(cfg, args.source, input_digest(inputs)), args.restart)
    kept, dropped, report = rule_stages(inputs, cfg.curate, extra_refs)
    say("rule stages: " + ", ".join(f"{s['stage']} -{s['dropped']}" for s in report["stages"]) + f" -> {len(kept)}")
    kept, more, model_report = model_stages(kept, cfg, state_dir, progress=not args.quiet)
    dropped += more
    from longrl.data.curate.tags import tag_counts

    report["stages"] += model_report.pop("stages")
    report |= model_report
    report["tags"]["final"] = tag_counts(kept)
    report = {"input": args.source, "model": cfg.model.path,
              "counts": {"in": len(inputs) + len(skipped), "kept": len(kept), "rejected": len(dropped) + len(skipped),
                         "invalid_rows": len(skipped)}} | report
    report["config"] = to_dict(cfg.curate)
    report["seconds"] = round(time.time() - t0, 1)
    written = write_outputs(out, inputs, kept, dropped, report, skipped)
    say(f"kept {len(kept)} of {len(inputs)} prompts; rejected {len(dropped)}")
    say("written: " + ", ".join(str(p) for p in written))
    return 0
