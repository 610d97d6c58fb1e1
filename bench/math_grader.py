"""Benchmark the math grader: accuracy on reference solutions, and throughput of the worker pool.

Accuracy (per set: MATH-500 / GSM8K / Minerva as shipped with longrl, or --data DIR):
  * own:   each reference solution is the response, graded against its own answer -> share correct
           (goal >= 99.6%);
  * cross: each solution graded against the answer of a different problem whose answer differs
           -> share accepted (goal <= 0.4%).
Throughput: the same mix of responses (MATH-500 solutions against their own and against other
answers, plus 1% pathological answers that hit the timeout) graded by MathScorer's worker pool
and by single-process math-verify (same extraction and guards, math-verify's own signal-based
timeout of the same length), side by side in this run. Also without the pathological 1%.

    python bench/math_grader.py                    # everything, ~1-2 minutes on 2 cores
    python bench/math_grader.py --skip-throughput  # accuracy only

Prints a Markdown table per part. Exits 2 with a message if a benchmark file is missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sympy.core.cache import clear_cache  # noqa: E402

from longrl.data.benchmarks import benchmark_file  # noqa: E402
from longrl.data.math import load_math_benchmark  # noqa: E402
from longrl.errors import UserError  # noqa: E402
from longrl.rewards.math import MathScorer  # noqa: E402
from longrl.rewards.math_extract import final_answer, is_hedged, reference_answer  # noqa: E402
from longrl.rewards.math_pool import _parse, _warm_up, verify_answer  # noqa: E402
from longrl.types import Prompt  # noqa: E402

SETS = ("math500", "gsm8k", "minerva_math")
# Short answers (so they pass the length guard and reach math-verify) that sympy cannot finish:
# power towers and a huge factorial. Each hits the full timeout in both graders.
PATHOLOGICAL = ["9^{9^{9^{9}}}", "10^{10^{10}}", "1000000!", "7^{7^{7^{7}}}+1", "(10^{10^{9}})!"]


def solution_of(p: Prompt) -> str:
    return p.tags["solution"]


def accuracy(scorer: MathScorer, name: str, data_dir: Path | None, show: int) -> dict:
    prompts = load_math_benchmark(name, data_dir)
    sols = [solution_of(p) for p in prompts]
    t = time.perf_counter()
    own = scorer(prompts, sols)
    # Cross: pair prompt i with the next solution whose reference differs from prompt i's.
    refs = [p.reference for p in prompts]
    n = len(prompts)
    cross_sols = []
    for i in range(n):
        j = (i + 1) % n
        while refs[j] == refs[i] and j != i:
            j = (j + 1) % n
        cross_sols.append(sols[j])
    cross = scorer(prompts, cross_sols)
    seconds = time.perf_counter() - t
    own_ok = sum(s.correct for s in own)
    cross_ok = sum(s.correct for s in cross)
    for label, scores, want in (("own", own, False), ("cross", cross, True)):
        bad = [(p, s) for p, s in zip(prompts, scores) if s.correct == want]
        for p, s in bad[:show]:
            print(
                f"  [{name} {label}] {p.id}: reason={s.reason} answer={s.parts.get('answer')!r} "
                f"reference={p.reference!r}",
                file=sys.stderr,
            )
    reasons: dict[str, int] = {}
    for s in own:
        if not s.correct:
            reasons[s.reason] = reasons.get(s.reason, 0) + 1
    return {"set": name, "n": n, "own": own_ok, "cross": cross_ok, "seconds": seconds, "own_fail": reasons}


def single_process(prompts: list[Prompt], responses: list[str], timeout: int, max_chars: int):
    """The baseline: the scorer's extraction and guards, then math-verify in this process."""
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    out, lat = [], []
    for p, r in zip(prompts, responses):
        t = time.perf_counter()
        ref = reference_answer(p.reference)
        ext = final_answer(r, (p.text,))
        if ext.answer is None:
            status = ext.reason
        elif len(ext.answer) > max_chars:
            status = "too_long"
        elif is_hedged(ext.answer, ref):
            status = "hedged"
        else:
            status = verify_answer(ext.answer, ref, timeout=timeout)
        lat.append(time.perf_counter() - t)
        out.append(status)
    return out, lat


def throughput_mix(data_dir: Path | None, n: int, pathological_share: float, seed: int):
    prompts = load_math_benchmark("math500", data_dir)
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        i = rng.randrange(len(prompts))
        j = i if rng.random() < 0.5 else rng.randrange(len(prompts))
        pairs.append((prompts[i], solution_of(prompts[j])))
    k = round(n * pathological_share)
    for idx, slot in enumerate(rng.sample(range(n), k)):
        p, _ = pairs[slot]
        pairs[slot] = (p, f"... so the answer is \\boxed{{{PATHOLOGICAL[idx % len(PATHOLOGICAL)]}}}.")
    return [p for p, _ in pairs], [r for _, r in pairs], k


_SPIN = (
    "import time\nt = time.perf_counter()\nx = 0\n"
    "for i in range(6_000_000): x += i\nprint(time.perf_counter() - t)"
)


def free_cores(n: int = 2) -> float:
    """How many cores this run can use now: n busy loops at once vs one alone (about 3 s)."""

    def spin(k: int) -> float:
        procs = [
            subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True)
            for _ in range(k)
        ]
        return max(float(p.communicate()[0]) for p in procs)

    one = spin(1)
    return n * one / spin(n)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def throughput(args, data_dir: Path | None) -> list[dict]:
    """Pool vs single process on the same responses, ``args.rounds`` rounds in ABBA order.

    Each side grades the whole mix as one batch (one scorer call, as a trainer sends it); the
    pool goes first in even rounds and second in odd ones, so a load that grows or shrinks during
    the run affects both sides alike. The per-round speed-ups show how much other work on the
    machine moved the figures. Pool latency is the time from handing a
    check to a worker to its result (checks that reach math-verify); single-process latency is
    the time per answer, extraction included.
    """
    rows = []
    for share in (args.pathological, 0.0):
        prompts, responses, k = throughput_mix(data_dir, args.n, share, args.seed)
        pool_s = single_s = 0.0
        pool_lat: list[float] = []
        single_lat: list[float] = []
        ratios: list[float] = []
        agree = 0
        for r in range(args.rounds):  # pool first in even rounds, single first in odd ones
            p_s, s_s, p_lat, s_lat, same = _round(args, prompts, responses, pool_first=r % 2 == 0)
            pool_s, single_s = pool_s + p_s, single_s + s_s
            pool_lat, single_lat = pool_lat + p_lat, single_lat + s_lat
            ratios.append(s_s / p_s)
            agree += same
        n = len(prompts) * args.rounds
        rows.append(
            {
                "mix": f"{len(prompts)} answers, {k} pathological ({share:.0%})",
                "pool_rate": n / pool_s,
                "single_rate": n / single_s,
                "ratios": ratios,
                "pool_p50": pct(pool_lat, 0.5),
                "pool_p99": pct(pool_lat, 0.99),
                "single_p50": pct(single_lat, 0.5),
                "single_p99": pct(single_lat, 0.99),
                "agree": agree,
                "n": n,
            }
        )
    return rows


def _round(args, prompts: list[Prompt], responses: list[str], pool_first: bool):
    """One round: a new scorer, cold caches on both sides, the whole mix as one batch each."""
    scorer = MathScorer(timeout=args.timeout, workers=args.workers)
    scorer([prompts[0]] * 4, ["\\boxed{1}"] * 4)  # workers started and warm before the clock
    # The baseline warms up as the pool's workers do, then starts with cold caches as a new
    # scorer's workers do (the rounds and the two mixes share most of their answers).
    _warm_up()
    _parse.cache_clear()
    clear_cache()
    out = {}
    for who in ("pool", "single") if pool_first else ("single", "pool"):
        t = time.perf_counter()
        if who == "pool":
            scores = scorer(prompts, responses)
            out["pool"] = (
                time.perf_counter() - t,
                [s.parts["seconds"] for s in scores if "seconds" in s.parts],
                [s.reason for s in scores],
            )
        else:
            status, lat = single_process(prompts, responses, int(args.timeout), scorer.max_answer_chars)
            out["single"] = (time.perf_counter() - t, lat, status)
    scorer.close()
    agree = sum((a == "ok") == (b == "ok") for a, b in zip(out["pool"][2], out["single"][2]))
    return out["pool"][0], out["single"][0], out["pool"][1], out["single"][1], agree


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None,
                    help="your own copy of the benchmark files (default: the copies shipped with longrl)")
    ap.add_argument("--timeout", type=int, default=2, help="seconds per answer, both graders")
    ap.add_argument("--workers", type=int, default=None, help="pool size (default min(2, cpus))")
    ap.add_argument("--n", type=int, default=1000, help="answers in the throughput mix")
    ap.add_argument("--pathological", type=float, default=0.01, help="share of timeout inputs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2, help="ABBA rounds per mix (other load is noisy)")
    ap.add_argument("--show", type=int, default=5, help="failures to print per set (stderr)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args()
    data_dir = args.data
    try:
        for name in SETS:
            benchmark_file(name, data_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; timeout {args.timeout} s; "
        f"load average at start {os.getloadavg()[0]:.2f}; cores free now ~{free_cores():.2f} of 2"
    )

    scorer = MathScorer(timeout=args.timeout, workers=args.workers)
    try:
        acc = [] if args.skip_accuracy else [accuracy(scorer, n, data_dir, args.show) for n in SETS]
    finally:
        scorer.close()
    print("\n| set | n | own solution graded correct | other answer accepted | own failures | s |")
    print("|---|---|---|---|---|---|")
    for r in acc:
        print(
            f"| {r['set']} | {r['n']} | {r['own']}/{r['n']} = {100 * r['own'] / r['n']:.2f}% "
            f"| {r['cross']}/{r['n']} = {100 * r['cross'] / r['n']:.2f}% | {r['own_fail'] or '-'} "
            f"| {r['seconds']:.1f} |"
        )

    if not args.skip_throughput:
        rows = throughput(args, data_dir)
        print(
            "\n| mix | pool answers/s | single answers/s | speed-up (per round) | pool p50 / p99 s "
            "| single p50 / p99 s | verdicts agree |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            per_round = ", ".join(f"{x:.2f}" for x in r["ratios"])
            print(
                f"| {r['mix']} | {r['pool_rate']:.1f} | {r['single_rate']:.1f} "
                f"| {r['pool_rate'] / r['single_rate']:.2f}x ({per_round}) "
                f"| {r['pool_p50']:.4f} / {r['pool_p99']:.3f} "
                f"| {r['single_p50']:.4f} / {r['single_p99']:.3f} | {r['agree']}/{r['n']} |"
            )
    print(
        f"\nload average at end {os.getloadavg()[0]:.2f}; cores free now ~{free_cores():.2f} of 2 "
        "(other work on the machine slows the pool most)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
