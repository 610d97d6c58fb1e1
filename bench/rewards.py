"""Benchmark configured rewards: custom functions through the router, and the CoT judge on a local model.

throughput: a trivial reward function (is the response equal to the reference?) in verl's form
  (one call per response) and TRL's (one call per batch), scored through
  ``build_router`` -- the worker processes, the pipe, the adapters -- against calling the same
  function directly in this process. Batches of 128 responses (the quickstart's 16 prompts x 8);
  prints responses/s and the overhead per response.
judge: ``rewards.math.policy=judge`` with ``rewards.math.judge.path`` a local model on the ``hf``
  engine (default: the quickstart's warm checkpoint, else a freshly built quickstart-sized tiny
  model), judging GSM8K reference solutions; prints judged responses/s and the verdict reasons. The
  tiny model is no grader (it was trained on countdown, so most verdicts are ``judge_error``): this
  measures the plumbing and the engine, not the judge's accuracy.

    python bench/rewards.py throughput [--batches 40] [--workers 1 2]
    python bench/rewards.py judge [--model DIR] [--n 32] [--max-tokens 64]

The training run with a format term uses :func:`answer_format` from this file as the term
(docs/benchmarks.md, "Configured rewards"):

    longrl train --set rewards.terms.countdown.format.fn=bench/rewards.py:answer_format \\
                 --set rewards.terms.countdown.format.weight=0.1 ...
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_ANSWER_LINE = re.compile(r"^answer[ \t]+\S", re.MULTILINE)


def trivial_verl(data_source, solution_str, ground_truth, extra_info=None):
    return float(solution_str == ground_truth)


def trivial_trl(prompts, completions, reference, **kwargs):
    return [float(c == r) for c, r in zip(completions, reference)]


def answer_format(prompts, completions, **kwargs):
    """A format term for countdown (TRL's form): 1 when the response's last line is an ``answer``
    line, as the task asks; 0 for a response cut off at the length cap or rambling after its answer."""
    out = []
    for c in completions:
        lines = [ln for ln in c.strip().splitlines() if ln.strip()]
        out.append(float(bool(lines) and _ANSWER_LINE.match(lines[-1]) is not None))
    return out


def _batch(n: int):
    from longrl.types import Prompt

    prompts = [Prompt(id=str(i), text=f"What is {i} + 1?", reference=str(i + 1), task="t") for i in range(n)]
    return prompts, [str(i + 1 if i % 2 else i) for i in range(n)]


def throughput(args) -> None:
    from longrl.config import load_config
    from longrl.rewards.compose import build_router

    prompts, responses = _batch(args.batch)
    refs = [p.reference for p in prompts]
    print("| form | workers | direct (responses/s) | router (responses/s) | overhead per response |")
    print("|---|---:|---:|---:|---:|")
    for form, fn in (("verl", trivial_verl), ("trl", trivial_trl)):
        t0 = time.perf_counter()
        for _ in range(args.batches):
            if form == "verl":
                direct = [fn("t", r, g, None) for r, g in zip(responses, refs)]
            else:
                direct = fn([p.text for p in prompts], responses, refs)
        t_direct = (time.perf_counter() - t0) / args.batches
        for workers in args.workers:
            cfg = load_config(None, [f"rewards.custom.t=bench/rewards.py:trivial_{form}", f"rewards.workers={workers}"])
            router = build_router(cfg.rewards)
            try:
                assert [s.value for s in router(prompts, responses)] == direct  # and the workers are warm
                times = []
                for _ in range(args.batches):
                    t0 = time.perf_counter()
                    router(prompts, responses)
                    times.append(time.perf_counter() - t0)
            finally:
                router.close()
            t = statistics.median(times)
            print(f"| {form} | {workers} | {args.batch / t_direct:,.0f} | {args.batch / t:,.0f} | "
                  f"{(t - t_direct) / args.batch * 1e6:.0f} µs |")
    print(f"\n{args.batches} batches of {args.batch}; router time: median batch. {_machine()}")


def judge(args) -> None:
    import torch

    from longrl.config import load_config
    from longrl.data.math import load_math_benchmark
    from longrl.models.loading import quiet_transformers
    from longrl.rewards.compose import build_router

    quiet_transformers()
    torch.set_num_threads(args.threads)
    model = args.model or _quickstart_model()
    prompts = load_math_benchmark("gsm8k")[: args.n]
    responses = [p.tags["solution"] for p in prompts]
    cfg = load_config(None, ["rewards.math.policy=judge", f"rewards.math.judge.path={model}",
                             f"rewards.math.judge.max_tokens={args.max_tokens}"])
    t0 = time.perf_counter()
    router = build_router(cfg.rewards, tasks={"math"})
    t_load = time.perf_counter() - t0
    try:
        router(prompts[:2], responses[:2])  # warm-up
        t0 = time.perf_counter()
        scores = router(prompts, responses)
        t = time.perf_counter() - t0
    finally:
        router.close()
    reasons = {r: sum(s.reason == r for s in scores) for r in sorted({s.reason for s in scores})}
    print(f"judge: {model} on the hf engine, {args.n} GSM8K reference solutions, at most {args.max_tokens} "
          f"judge tokens, torch threads {args.threads}")
    print(f"  built in {t_load:.1f} s; judged {len(scores)} in {t:.1f} s = {len(scores) / t:.2f} responses/s")
    print(f"  reasons: {reasons}\n{_machine()}")


def _quickstart_model() -> str:
    warm = ROOT / "runs" / "_warm" / "quickstart"
    if (warm / "config.json").is_file():
        return str(warm)
    from longrl.models.tiny import TinyModelConfig, build_tiny_model, task_corpus

    out = ROOT / "runs" / "_bench_tiny_judge"
    if not (out / "config.json").is_file():
        # the quickstart's architecture with room for the judge's prompt (~600 tokens of this tokenizer)
        build_tiny_model(out, TinyModelConfig(hidden_size=128, num_layers=3, num_heads=4, intermediate_size=512,
                                              max_positions=2048), task_corpus())
    return str(out)


def _machine() -> str:
    return f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--batches", type=int, default=40)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    j = sub.add_parser("judge")
    j.add_argument("--model", help="judge model folder (default: the quickstart's warm checkpoint)")
    j.add_argument("--n", type=int, default=32)
    j.add_argument("--max-tokens", type=int, default=64)
    j.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.chdir(ROOT)  # the config names bench/rewards.py relative to the repository
    {"throughput": throughput, "judge": judge}[args.what](args)


if __name__ == "__main__":
    main()
