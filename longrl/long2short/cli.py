"""``longrl long2short ACTION``: make a long-CoT model answer in fewer tokens (k1.5 §2.4).

    short-sft --base WARM --out B                 the short-CoT model, fine-tuned from the long model's SFT start
    merge     --long A --short B [--alpha 0.5] --out C
    shortest  --model A --data P [--n 8] --out D [--train]
    dpo       --model A --data P [--n 8] --out D
    rl        --model A [--set key=value ...]
    compare   MODEL... [--bench countdown]

Every action checks its inputs before writing, and writes its output folder under a temporary
name that is renamed into place only when it is complete.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (help_text, add, _) in ACTIONS.items():
        a = sub.add_parser(name, help=help_text, description=help_text)
        add(a)
        if name in ("shortest", "dpo", "compare"):  # they score; rl reads its config's rewards section
            from longrl.config import RewardsConfig

            RewardsConfig.add_arguments(a)
        if name in ("short-sft", "shortest", "dpo"):  # they train; rl reads model.freeze_vision_tower
            a.add_argument("--freeze-vision-tower", action="store_true",
                           help="keep a vision-language model's encoder fixed while the rest trains")
        if name != "rl":  # rl takes these as config fields: --set threads=1 / seed=0
            a.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
            a.add_argument("--seed", type=int, default=0)
            a.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from longrl.models.loading import quiet_transformers

    quiet_transformers()
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    return ACTIONS[args.action][2](args)


# ----------------------------------------------------------------------------- arguments


def _sampling_args(a) -> None:
    a.add_argument("--model", required=True, help="the long-CoT model folder to sample from and train")
    a.add_argument("--data", required=True,
                   help="prompts with references (a JSONL/Parquet file, dataset folder or hf:NAME[:SPLIT]), "
                   "or 'countdown' for the built-in task")
    a.add_argument("--limit", type=int, help="use the first N prompts (countdown: how many to draw; default 512)")
    a.add_argument("--n", type=int, default=8, help="samples per prompt (default 8, as in k1.5)")
    a.add_argument("--max-tokens", type=int, default=192, help="max new tokens per sample")
    a.add_argument("--temperature", type=float, default=1.0)
    a.add_argument("--chat-template", action="store_true", help="wrap prompts with the chat template")
    a.add_argument("--out", required=True, help="output folder (must not exist)")


def _args_short_sft(a) -> None:
    a.add_argument("--base", required=True, help="the long model's SFT start (e.g. runs/_warm/<key>)")
    a.add_argument("--out", required=True, help="output model folder (must not exist)")
    a.add_argument("--data", help="short solutions as prompt + response (a JSONL/Parquet file, dataset "
                   "folder or hf:NAME[:SPLIT]; default: built-in short traces)")
    a.add_argument("--examples", type=int, default=8000, help="built-in short traces to write (default 8000)")
    a.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    a.add_argument("--epochs", type=float, default=1.0)
    a.add_argument("--batch-tokens", type=int, default=4096, help="tokens per optimizer step")
    a.add_argument("--chat-template", action="store_true", help="wrap prompts with the chat template")


def _args_merge(a) -> None:
    a.add_argument("--long", required=True, help="the long-CoT model folder")
    a.add_argument("--short", required=True, help="the short-CoT model folder (same architecture and vocabulary)")
    a.add_argument("--alpha", type=float, default=0.5, help="weight of the long model, in [0, 1] (default 0.5)")
    a.add_argument("--out", required=True, help="output model folder (must not exist)")


def _args_shortest(a) -> None:
    _sampling_args(a)
    a.add_argument("--train", action="store_true", help="fine-tune --model on the selected responses")
    a.add_argument("--lr", type=float, default=1e-4, help="SFT peak learning rate (default 1e-4)")
    a.add_argument("--epochs", type=float, default=3.0, help="SFT passes over the selected responses")
    a.add_argument("--batch-tokens", type=int, default=2048, help="SFT tokens per optimizer step")


def _args_dpo(a) -> None:
    from longrl.train.dpo import DPOConfig

    d = DPOConfig()
    _sampling_args(a)
    a.add_argument("--ratio", type=float, default=1.5,
                   help="a correct sample at least this many times the positive's length is a negative (default 1.5)")
    a.add_argument("--beta", type=float, default=d.beta, help=f"DPO beta (default {d.beta})")
    a.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    a.add_argument("--epochs", type=float, default=d.epochs)
    a.add_argument("--batch-pairs", type=int, default=d.batch_pairs, help="pairs per optimizer step")
    a.add_argument("--sft-weight", type=float, default=d.sft_weight,
                   help="weight of an NLL term on the chosen response (RPO; default 0: plain DPO)")


def _args_rl(a) -> None:
    a.add_argument("--model", required=True, help="the long-CoT model folder to start from")
    a.add_argument("--config", default="long2short_rl", help="preset or YAML file (default: long2short_rl)")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set rl.iterations=20 (repeatable)")
    a.add_argument("--out", help="parent folder for the run directory (same as --set out=...)")
    a.add_argument("--name", help="run directory name (same as --set name=...)")
    a.add_argument("--quiet", action="store_true", help="no progress bars")


def _args_compare(a) -> None:
    a.add_argument("models", nargs="+", metavar="MODEL", help="model folders; the first is the baseline")
    a.add_argument("--labels", help="comma-separated names for the plot and table (default: folder names)")
    a.add_argument("--bench", help="benchmark name (default: countdown, the built-in held-out set)")
    a.add_argument("--data", help="your own prompts instead of a benchmark (a file, dataset folder or hf:NAME)")
    a.add_argument("--data-dir", help="your own copy of the benchmark files (default: the shipped copies)")
    a.add_argument("--limit", type=int, help="evaluate only the first N prompts")
    a.add_argument("--n", type=int, default=4, help="samples per prompt for pass@1 (default 4)")
    a.add_argument("--max-tokens", type=int, default=192, help="max new tokens per response")
    a.add_argument("--temperature", type=float, default=1.0)
    a.add_argument("--no-greedy", action="store_true", help="skip the greedy pass")
    a.add_argument("--chat-template", action="store_true", help="wrap prompts with the chat template")
    a.add_argument("--out", default="runs/long2short-compare",
                   help="folder for compare.json and compare.png (default runs/long2short-compare)")


# ----------------------------------------------------------------------------- actions


def _run_short_sft(args) -> int:
    from longrl.config import SFTConfig
    from longrl.errors import UserError
    from longrl.long2short.io import check_model_dir, check_new_output, child_record, staged_output
    from longrl.models.loading import context_length, load_model, save_model
    from longrl.models.vision import load_processor
    from longrl.train.sft import encode_examples, run_sft

    check_model_dir(args.base, "--base")
    check_new_output(args.out)
    cfg = SFTConfig(examples=args.examples, lr=args.lr, epochs=args.epochs, batch_tokens=args.batch_tokens)
    cfg.validate()
    if args.data:
        from longrl.data.sources import load_sft_examples

        examples, source = load_sft_examples(args.data), args.data
    else:
        from longrl.tasks import countdown

        if args.examples < 1:
            raise UserError("--examples must be at least 1")
        # the warm-up's prompts when --seed is its seed (0 by default), answered directly: "answer <steps>"
        examples = countdown.sft_examples(args.seed, args.examples, short=True)
        source = "built-in short countdown traces"
    model, tok = load_model(args.base)
    processor = load_processor(args.base)
    _freeze(args, model)
    seqs = encode_examples(tok, examples, context_length(model), args.chat_template, source, processor)
    _say(args, f"short-CoT SFT from {args.base}: {len(seqs)} examples from {source}")
    stats = run_sft(model, tok, seqs, cfg, seed=args.seed, progress=not args.quiet)
    record = child_record("short_sft", args.base, data=source, sft=stats, lr=args.lr, epochs=args.epochs)
    with staged_output(args.out) as tmp:
        save_model(model, tok, tmp, extra=record, processor=processor)
    print(f"short-CoT model written to {args.out}")
    return 0


def _run_merge(args) -> int:
    from longrl.long2short.merge import merge_models

    rep = merge_models(args.long, args.short, args.out, args.alpha)
    for w in rep.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"merged {rep.tensors} tensors: {args.alpha} x {args.long} + {1 - args.alpha:g} x {args.short}"
          f" -> {args.out}")
    return 0


def _prepare_sampling(args):
    """Check every input of shortest/dpo before any sampling: n, output folder, model, prompts.
    Returns (prompts, model, tokenizer, processor); the processor is a vision-language model's, else None."""
    from longrl.errors import UserError
    from longrl.long2short.io import check_model_dir, check_new_output
    from longrl.long2short.sample import load_prompts
    from longrl.models.loading import context_length, load_model
    from longrl.models.vision import load_processor, prompt_length

    if args.n < 2:
        raise UserError(f"--n {args.n}: need at least 2 samples per prompt to choose the shortest")
    if args.max_tokens < 1 or args.temperature <= 0:
        raise UserError("--max-tokens must be positive and --temperature > 0 (sampling, not greedy)")
    check_model_dir(args.model, "--model")
    check_new_output(args.out)
    prompts = load_prompts(args.data, args.limit, args.seed)
    model, tok = load_model(args.model)
    processor = load_processor(args.model)
    _freeze(args, model)  # a text-only model is refused here, before any sampling
    ctx = context_length(model)
    for p in prompts:  # image tokens expanded, as the model takes them
        if prompt_length(tok, processor, p, args.chat_template) + args.max_tokens > ctx:
            raise UserError(f"{args.data}: prompt {p.id!r} plus --max-tokens {args.max_tokens} exceeds the "
                            f"model's context of {ctx} tokens")
    return prompts, model, tok, processor


def _freeze(args, model) -> None:
    if getattr(args, "freeze_vision_tower", False):
        from longrl.models.vision import freeze_vision_tower

        freeze_vision_tower(model)


def _sample(args, prompts, model, tok, processor):
    from longrl.config import RewardsConfig
    from longrl.long2short.sample import sample_groups

    rewards = RewardsConfig.from_arguments(args)
    _say(args, f"sampling {args.n} responses for each of {len(prompts)} prompts from {args.model} ...")
    t0 = time.time()
    groups = sample_groups(model, tok, prompts, n=args.n, temperature=args.temperature,
                           max_new_tokens=args.max_tokens, seed=args.seed, chat_template=args.chat_template,
                           rewards=rewards, processor=processor)
    return groups, time.time() - t0


def _run_shortest(args) -> int:
    from longrl.config import SFTConfig
    from longrl.data.images import row_images
    from longrl.errors import UserError
    from longrl.long2short.io import child_record
    from longrl.long2short.select import selection_stats, shortest_rows
    from longrl.models.loading import context_length
    from longrl.train.sft import encode_examples, run_sft

    cfg = SFTConfig(lr=args.lr, epochs=args.epochs, batch_tokens=args.batch_tokens)
    cfg.validate()
    prompts, model, tok, processor = _prepare_sampling(args)
    groups, secs = _sample(args, prompts, model, tok, processor)
    stats = selection_stats(groups) | {"n": args.n, "sampling_s": secs, "model": str(args.model)}
    rows = shortest_rows(groups)
    print(f"{stats['prompts_without_correct']} of {len(groups)} prompts had no correct sample among "
          f"{args.n}; kept {len(rows)} shortest correct responses (mean {stats['tokens_mean_shortest_correct']:.1f} "
          f"tokens; all samples {stats['tokens_mean_all']:.1f}, correct samples {stats['tokens_mean_correct']:.1f})")
    if not rows:
        raise UserError(f"no prompt had a correct sample among {args.n}; nothing to write")
    if args.train:
        # trained on the rows as written, images decoded back from them
        seqs = encode_examples(tok, [(r["prompt"], r["response"], row_images(r, None)) for r in rows],
                               context_length(model), args.chat_template, "shortest.jsonl", processor)
        stats["sft"] = run_sft(model, tok, seqs, cfg, seed=args.seed, progress=not args.quiet)
    record = child_record("shortest_rs", args.model, data="shortest.jsonl", n=args.n, lr=args.lr,
                          epochs=args.epochs) if args.train else None
    _write_selection(args.out, "shortest.jsonl", rows, groups, stats, model, tok, processor, record)
    what = "SFT data and the fine-tuned model" if args.train else "SFT data (shortest.jsonl)"
    print(f"{what} written to {args.out}")
    return 0


def _write_selection(out, name: str, rows: list[dict], groups, stats: dict, model, tok, processor,
                     record: dict | None) -> None:
    """Write the selected rows, every sample, the summary and (with ``record``) the trained model, atomically."""
    from longrl.long2short.io import staged_output, write_jsonl
    from longrl.long2short.sample import group_rows
    from longrl.models.loading import save_model

    with staged_output(out) as tmp:
        write_jsonl(tmp / name, rows)
        write_jsonl(tmp / "samples.jsonl", group_rows(groups))
        (tmp / "summary.json").write_text(json.dumps(stats, indent=2))
        if record is not None:
            save_model(model, tok, tmp, extra=record, processor=processor)


def _run_dpo(args) -> int:
    from longrl.data.images import row_images
    from longrl.errors import UserError
    from longrl.long2short.io import child_record
    from longrl.long2short.select import pair_rows, selection_stats
    from longrl.models.loading import context_length
    from longrl.train.dpo import DPOConfig, encode_pairs, run_dpo

    cfg = DPOConfig(beta=args.beta, lr=args.lr, epochs=args.epochs, batch_pairs=args.batch_pairs,
                    sft_weight=args.sft_weight)
    cfg.validate()
    if args.ratio < 1:
        raise UserError(f"--ratio {args.ratio}: must be at least 1 (k1.5 uses 1.5)")
    prompts, model, tok, processor = _prepare_sampling(args)
    groups, secs = _sample(args, prompts, model, tok, processor)
    stats = selection_stats(groups, args.ratio) | {"n": args.n, "ratio": args.ratio, "sampling_s": secs,
                                                   "model": str(args.model)}
    rows = pair_rows(groups, args.ratio)
    print(f"{stats['prompts_without_correct']} of {len(groups)} prompts had no correct sample among "
          f"{args.n}; {stats['pairs']} pairs from {stats['prompts_with_pairs']} prompts "
          f"({sum(r['rejected_correct'] for r in rows)} with a correct but >= {args.ratio}x longer negative)")
    if not rows:
        raise UserError(f"no preference pairs: no prompt had both a correct sample and a longer wrong or "
                        f">= {args.ratio}x longer correct one among {args.n}")
    data = encode_pairs(tok, [(r["prompt"], r["chosen"], r["rejected"], row_images(r, None)) for r in rows],
                        context_length(model), args.chat_template, "pairs.jsonl", processor)
    stats["dpo"] = run_dpo(model, tok, data, cfg, seed=args.seed, progress=not args.quiet)
    record = child_record("dpo", args.model, data="pairs.jsonl", n=args.n, ratio=args.ratio, beta=args.beta,
                          lr=args.lr, sft_weight=args.sft_weight)
    _write_selection(args.out, "pairs.jsonl", rows, groups, stats, model, tok, processor, record)
    d = stats["dpo"]
    print(f"DPO: {d['dpo/steps']} steps, last-epoch pair accuracy {d['dpo/accuracy']:.3f}, "
          f"margin {d['dpo/margin']:.3f}; model written to {args.out}")
    return 0


def _run_rl(args) -> int:
    from longrl.config import load_config
    from longrl.long2short.io import check_model_dir
    from longrl.train.checkpoint import latest_checkpoint
    from longrl.train.loop import train

    check_model_dir(args.model, "--model")
    overrides = [f"model.path={args.model}", "sft.enabled=false", *args.overrides]
    if args.out:
        overrides.append(f"out={args.out}")
    if args.name:
        overrides.append(f"name={args.name}")
    cfg = load_config(args.config, overrides)
    run_dir = train(cfg, progress=not args.quiet)
    print(f"long2short RL model: {latest_checkpoint(run_dir / 'checkpoints')}")
    return 0


def _run_compare(args) -> int:
    from longrl.config import RewardsConfig
    from longrl.errors import UserError
    from longrl.eval.benchmarks import load_benchmark
    from longrl.long2short.compare import evaluate_models, format_table, plot_points
    from longrl.long2short.io import check_model_dir

    if args.bench and args.data:
        raise UserError("give at most one of --bench NAME or --data FILE")
    if args.n < 1:
        raise UserError("--n must be at least 1")
    rewards = RewardsConfig.from_arguments(args)
    for m in args.models:
        check_model_dir(m, "MODEL")
    labels = args.labels.split(",") if args.labels else [Path(m).name for m in args.models]
    if len(labels) != len(args.models):
        raise UserError(f"--labels has {len(labels)} names for {len(args.models)} models")
    if args.data:
        from longrl.data.sources import load_prompts, source_name

        prompts, name = load_prompts(args.data), source_name(args.data)
    else:
        name = args.bench or "countdown"
        prompts = load_benchmark(name, args.data_dir)
    if args.limit:
        prompts = prompts[: args.limit]
    points = evaluate_models(args.models, labels, prompts, n=args.n, temperature=args.temperature,
                             max_new_tokens=args.max_tokens, seed=args.seed, chat_template=args.chat_template,
                             greedy=not args.no_greedy, progress=not args.quiet, rewards=rewards)
    table = format_table(points)
    print(f"\n{name}: {len(prompts)} prompts x {args.n} samples, at most {args.max_tokens} new tokens\n{table}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"benchmark": name, "prompts": len(prompts), "n": args.n, "max_tokens": args.max_tokens,
               "temperature": args.temperature, "seed": args.seed, "models": [p.to_dict() for p in points]}
    (out / "compare.json").write_text(json.dumps(summary, indent=2))
    plot_points(points, out / "compare.png", f"{name}: pass@1 vs response length")
    print(f"written: {out / 'compare.json'}, {out / 'compare.png'}")
    return 0


def _say(args, msg: str) -> None:
    if not args.quiet:
        print(msg, flush=True)


# action -> (one-line help, add its arguments, run it)
ACTIONS = {
    "short-sft": ("fine-tune the short-CoT model from the long model's SFT start", _args_short_sft,
                  _run_short_sft),
    "merge": ("average the weights of a long- and a short-CoT model", _args_merge, _run_merge),
    "shortest": ("shortest-correct rejection sampling: an SFT file, then fine-tuning with --train",
                 _args_shortest, _run_shortest),
    "dpo": ("DPO on shortest-correct positives and long or wrong negatives", _args_dpo, _run_dpo),
    "rl": ("long2short RL: length penalty from the first iteration, shorter rollouts", _args_rl, _run_rl),
    "compare": ("accuracy against mean response tokens for several models (table, JSON, PNG)",
                _args_compare, _run_compare),
}
