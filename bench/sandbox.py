"""Sandbox figures: HumanEval correctness and the throughput / latency of sandboxed runs.

    python bench/sandbox.py [--data DIR] [--runs 600] [--concurrency 2]

1. HumanEval (the copy shipped with longrl, or ``--data DIR``'s) through the real code scorer:
   every canonical solution must pass (164/164), and a corrupted variant of each (the body
   replaced by ``return None``) must fail (0/164).
2. A trivial program (``print(1)``) run ``--runs`` times from ``--concurrency`` client threads
   (a closed loop: each thread submits its next run when the last one returns), in the sandbox and
   with a naive ``subprocess.run([python, "-c", ...])``, alternating in two rounds each so that
   load from other processes hits both alike. Reports runs/s, runs/s per core, and p50 / p99
   latency (submission to result). k1.5 reports 7.5 container starts/s per core (120/s, 16 cores).
3. Warm latency: single runs spaced 50 ms apart, so a warm process is always ready: the cost of a
   run itself when the pool is not saturated.

Load from other processes is printed (1-minute load average) before and after: on a shared
machine it lowers both columns; the ratio between them is the comparable figure. The CPU time
per run (this process plus every reaped descendant) does not depend on that load; "idle
capacity/core" = 1000 / (CPU ms per run) is what one idle core could sustain.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from longrl.rewards.sandbox import Sandbox  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def humaneval(data: Path | None, concurrency: int) -> dict:
    from longrl.data.benchmarks import benchmark_file
    from longrl.data.humaneval import load_humaneval
    from longrl.rewards.code import CodeScorer

    prompts = load_humaneval(data)
    rows = {r["task_id"]: r for r in map(json.loads, gzip.open(benchmark_file("humaneval", data), "rt"))}
    good = [f"```python\n{rows[p.id]['prompt']}{rows[p.id]['canonical_solution']}\n```" for p in prompts]
    bad = [f"```python\n{rows[p.id]['prompt']}    return None\n```" for p in prompts]
    scorer = CodeScorer(concurrency=concurrency)
    t = time.perf_counter()
    s_good = scorer(prompts, good)
    s_bad = scorer(prompts, bad)
    elapsed = time.perf_counter() - t
    scorer.close()
    fails = [(p.id, s.reason, s.parts.get("detail", "")) for p, s in zip(prompts, s_good) if not s.correct]
    return {"n": len(prompts), "canonical_pass": sum(s.correct for s in s_good),
            "corrupted_pass": sum(s.correct for s in s_bad), "seconds": elapsed, "canonical_failures": fails[:5],
            "corrupted_reasons": dict(sorted({r: sum(s.reason == r for s in s_bad)
                                              for r in {s.reason for s in s_bad}}.items()))}


def closed_loop(fn, runs: int, concurrency: int) -> dict:
    lat: list[float] = []

    def one(_: int) -> None:
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)

    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, range(runs)))
    el = time.perf_counter() - t0
    return {"runs": runs, "per_s": runs / el, "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * pct(lat, 0.99),
            "cpu_ms": 1000 * (cpu_seconds() - cpu0) / runs}


def cpu_seconds() -> float:
    """CPU time of this process and of every reaped descendant (bwrap reaps the stub, which
    reaps the job, so a finished run is fully counted): the load-independent cost of a run."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None,
                    help="folder with your own humaneval.jsonl.gz (default: the copy shipped with longrl)")
    ap.add_argument("--runs", type=int, default=600, help="runs per throughput measurement")
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-humaneval", action="store_true")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, load average {os.getloadavg()[0]:.2f}; concurrency {args.concurrency}")

    if not args.skip_humaneval:
        he = humaneval(args.data, args.concurrency)
        print(f"HumanEval: canonical {he['canonical_pass']}/{he['n']} pass, corrupted {he['corrupted_pass']}/{he['n']} "
              f"pass ({he['seconds']:.1f} s for {2 * he['n']} responses); corrupted reasons {he['corrupted_reasons']}")
        for f in he["canonical_failures"]:
            print("  canonical failure:", f)

    python = os.path.realpath(sys.executable)
    sb = Sandbox(concurrency=args.concurrency)

    def sandboxed() -> None:
        r = sb.run("print(1)")
        assert r.status == "ok" and r.stdout == b"1\n", r

    def naive() -> None:
        r = subprocess.run([python, "-c", "print(1)"], capture_output=True, timeout=10)
        assert r.returncode == 0 and r.stdout == b"1\n", r

    for _ in range(20):  # warm-up
        sandboxed()
    results: dict[str, list[dict]] = {"sandbox": [], "naive": []}
    for _ in range(2):
        results["sandbox"].append(closed_loop(sandboxed, args.runs, args.concurrency))
        results["naive"].append(closed_loop(naive, args.runs, args.concurrency))
    warm = []
    for _ in range(100):
        time.sleep(0.05)
        t = time.perf_counter()
        sandboxed()
        warm.append(time.perf_counter() - t)
    sb.close()

    print(f"\n| {'trivial program, ' + str(args.runs) + ' runs x 2 rounds':40s} | runs/s | per core | p50 ms "
          "| p99 ms | CPU ms/run | idle capacity/core |")
    print(f"|{'-' * 42}|-------:|---------:|-------:|-------:|-----------:|-------------------:|")
    agg = {}
    for name, rs in results.items():
        per_s = statistics.mean(r["per_s"] for r in rs)
        p50 = statistics.mean(r["p50_ms"] for r in rs)
        p99 = max(r["p99_ms"] for r in rs)
        cpu = statistics.mean(r["cpu_ms"] for r in rs)
        agg[name] = per_s
        label = "longrl sandbox (bwrap, warm pool)" if name == "sandbox" else "naive subprocess.run([python, -c])"
        print(f"| {label:40s} | {per_s:6.1f} | {per_s / cores:8.1f} | {p50:6.1f} | {p99:6.1f} | {cpu:10.1f} "
              f"| {1000 / cpu:18.1f} |")
    print(f"\nsandbox / naive throughput: {agg['sandbox'] / agg['naive']:.2f}x; rounds: "
          + "; ".join(f"{n} " + ", ".join(f"{r['per_s']:.1f}/s" for r in rs) for n, rs in results.items()))
    print(f"warm latency (runs 50 ms apart): p50 {1000 * statistics.median(warm):.1f} ms, "
          f"p99 {1000 * pct(warm, 0.99):.1f} ms")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
