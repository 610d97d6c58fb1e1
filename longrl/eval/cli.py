"""``longrl eval --model DIR (--bench NAME | --data FILE) [--n 8]``; ``longrl eval --list``."""

from __future__ import annotations

import json
import time
from pathlib import Path


def add_arguments(p) -> None:
    from longrl.eval.benchmarks import benchmark_names

    p.add_argument("--model", help="local Hugging Face model folder (required unless --list)")
    p.add_argument("--bench", help=f"benchmark name: {', '.join(benchmark_names())} (--list describes each)")
    p.add_argument("--list", action="store_true",
                   help="print every benchmark (prompts, scorer task, source, licence) and exit")
    p.add_argument("--data", help="your own prompts: a JSONL/Parquet file, a dataset folder or "
                   "hf:NAME[:SPLIT] (prompt text or chat messages and a reference; verl's schema too)")
    p.add_argument("--prompt-key", help="with --data: the column holding the prompt (default: auto-detect)")
    p.add_argument("--answer-key", help="with --data: the column holding the reference, dotted for nested "
                   "fields (default: auto-detect)")
    p.add_argument("--task-default", default="math",
                   help="with --data: scorer of rows that name none (task, verl data_source/ability)")
    p.add_argument("--data-dir", help="folder with your own copy of the benchmark files, under the shipped "
                   "names (default: the copies shipped with longrl)")
    p.add_argument("--n", type=int, default=4, help="samples per prompt for pass@1 / pass@n (default 4)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=192, help="max new tokens per response")
    p.add_argument("--limit", type=int, help="evaluate only the first N prompts")
    p.add_argument("--no-greedy", action="store_true", help="skip the greedy pass")
    p.add_argument("--blank-images", action="store_true",
                   help="control: replace every image by a blank one of its size (a model that reads the "
                        "pixels falls to chance)")
    p.add_argument("--chat-template", action="store_true", help="wrap prompts with the chat template")
    p.add_argument("--out", help="output folder for eval.jsonl and eval_summary.json (default: beside the model)")
    p.add_argument("--seed", type=int, default=0)
    from longrl.config import RewardsConfig

    RewardsConfig.add_arguments(p)  # --rewards CONFIG and --set rewards.KEY=VALUE: the scorers' options


def run(args) -> int:
    if args.list:
        from longrl.eval.benchmarks import format_benchmark_table

        print(format_benchmark_table())
        return 0
    from longrl.errors import UserError
    from longrl.eval.benchmarks import load_benchmark
    from longrl.eval.runner import evaluate
    from longrl.models.loading import load_model, quiet_transformers, resolve_device, stop_token_ids
    from longrl.models.vision import load_processor
    from longrl.config import RewardsConfig
    from longrl.rewards.compose import build_router
    from longrl.rollout.hf import HFEngine

    if args.model is None:
        raise UserError("--model DIR is required (only --list runs without a model)")
    if (args.bench is None) == (args.data is None):
        raise UserError("give exactly one of --bench NAME or --data FILE")
    if args.n < 1:
        raise UserError("--n must be at least 1")
    rewards = RewardsConfig.from_arguments(args)
    quiet_transformers()
    if args.bench:
        prompts, name = load_benchmark(args.bench, args.data_dir), args.bench
    else:
        from longrl.config import DataConfig
        from longrl.data.sources import load_prompts, source_name

        data = DataConfig(prompt_key=args.prompt_key, answer_key=args.answer_key,
                          task_default=args.task_default)
        data.validate()
        prompts, name = load_prompts(args.data, data), source_name(args.data)
    if args.limit:
        prompts = prompts[: args.limit]
    if args.blank_images:
        from longrl.tasks.render import blank_images

        if not any(p.images for p in prompts):
            raise UserError("--blank-images: these prompts carry no images")
        prompts, name = blank_images(prompts), f"{name}-blank"
    router = build_router(rewards, tasks={p.task for p in prompts})  # a bad option stops here, before any work
    try:
        model, tok = load_model(args.model)
        model.to(resolve_device())
        engine = HFEngine(model, stop_token_ids(tok, args.model, args.chat_template), tok.pad_token_id)
        t0 = time.time()
        res = evaluate(engine, tok, prompts, router, n=args.n, temperature=args.temperature,
                       max_new_tokens=args.max_tokens, greedy=not args.no_greedy, seed=args.seed,
                       chat_template=args.chat_template, keep_rows=True, processor=load_processor(args.model))
    finally:
        router.close()
    out = Path(args.out) if args.out else Path(args.model) / f"eval-{name}"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "eval.jsonl", "w") as f:
        for row in res.rows + res.greedy_rows:  # greedy rows last, with "sample": "greedy"
            f.write(json.dumps(row) + "\n")
    lengths = sorted(r["tokens"] for r in res.rows)
    summary = {"benchmark": name, "model": str(args.model), "prompts": len(prompts), "n": args.n,
               "pass@1": res.pass1, f"pass@{args.n}": res.pass_k, "greedy": res.greedy,
               "tokens_mean": res.len_mean, "tokens_median": res.len_median, "tokens_p90": res.len_p90,
               "per_level_pass@1": res.per_level, "per_task": res.per_task, "per_modality": res.per_modality,
               "reasons": res.reasons, "seconds": time.time() - t0}
    (out / "eval_summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(summary, lengths)
    print(f"written: {out / 'eval.jsonl'}, {out / 'eval_summary.json'}")
    return 0


def _print_table(s: dict, lengths: list[int]) -> None:
    n = s["n"]
    rows = [("prompts", s["prompts"]), ("pass@1", f"{s['pass@1']:.4f}")]
    if n > 1:
        rows.append((f"pass@{n}", f"{s[f'pass@{n}']:.4f}"))
    if s["greedy"] is not None:
        rows.append(("greedy", f"{s['greedy']:.4f}"))
    rows += [("tokens mean / median / p90", f"{s['tokens_mean']:.1f} / {s['tokens_median']:.0f} / {s['tokens_p90']:.0f}")]
    rows += [(f"pass@1 level {k}", f"{v:.4f}") for k, v in s["per_level_pass@1"].items()]
    rows += [(f"pass@1 {kind} {k}", f"{v['pass1']:.4f}") for kind in ("task", "modality")
             for k, v in s[f"per_{kind}"].items()]
    width = max(len(r[0]) for r in rows)
    print(f"\n{s['benchmark']}  ({s['model']})")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("  reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(s["reasons"].items())))
