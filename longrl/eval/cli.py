"""``longrl eval --model DIR (--bench NAME | --data FILE) [--n 8]``."""

from __future__ import annotations

import json
import time
from pathlib import Path


def add_arguments(p) -> None:
    from longrl.eval.benchmarks import benchmark_names

    p.add_argument("--model", required=True, help="local Hugging Face model folder")
    p.add_argument("--bench", help=f"benchmark name: {', '.join(benchmark_names())}")
    p.add_argument("--data", help="your own prompt file (JSONL/Parquet with prompt/problem and answer)")
    p.add_argument("--data-dir", help="shared benchmark data folder (default: $LONGRL_SHARED_DATA or ../shared/data)")
    p.add_argument("--n", type=int, default=4, help="samples per prompt for pass@1 / pass@n (default 4)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=192, help="max new tokens per response")
    p.add_argument("--limit", type=int, help="evaluate only the first N prompts")
    p.add_argument("--no-greedy", action="store_true", help="skip the greedy pass")
    p.add_argument("--chat-template", action="store_true", help="wrap prompts with the chat template")
    p.add_argument("--out", help="output folder for eval.jsonl and eval_summary.json (default: beside the model)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from longrl.errors import UserError
    from longrl.eval.benchmarks import load_benchmark
    from longrl.eval.runner import evaluate
    from longrl.models.loading import load_model, quiet_transformers, resolve_device, stop_token_ids
    from longrl.rewards import ScoreRouter
    from longrl.rollout.hf import HFEngine

    if (args.bench is None) == (args.data is None):
        raise UserError("give exactly one of --bench NAME or --data FILE")
    if args.n < 1:
        raise UserError("--n must be at least 1")
    quiet_transformers()
    if args.bench:
        prompts, name = load_benchmark(args.bench, args.data_dir), args.bench
    else:
        from longrl.data.prompts import load_prompt_file

        prompts, name = load_prompt_file(Path(args.data)), Path(args.data).stem
    if args.limit:
        prompts = prompts[: args.limit]
    model, tok = load_model(args.model)
    model.to(resolve_device())
    engine = HFEngine(model, stop_token_ids(tok, args.model, args.chat_template), tok.pad_token_id)
    router = ScoreRouter()
    t0 = time.time()
    try:
        res = evaluate(engine, tok, prompts, router, n=args.n, temperature=args.temperature,
                       max_new_tokens=args.max_tokens, greedy=not args.no_greedy, seed=args.seed,
                       chat_template=args.chat_template, keep_rows=True)
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
               "per_level_pass@1": res.per_level, "reasons": res.reasons, "seconds": time.time() - t0}
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
    width = max(len(r[0]) for r in rows)
    print(f"\n{s['benchmark']}  ({s['model']})")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("  reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(s["reasons"].items())))
