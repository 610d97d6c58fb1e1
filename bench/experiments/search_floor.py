"""How short a countdown response can be at a given accuracy: the frontier of ideal searchers.

    python bench/experiments/search_floor.py --model runs/_warm/KEY [--eval runs/R/eval.jsonl ...]

An *ideal searcher* writes the warm-up's long-CoT format (plan line, one line per attempt, answer
line) without slips and without ever repeating an attempt, and tries the first steps of a problem in
a uniformly random order: it knows how to search, not where the solution is. It differs from another
ideal searcher only in when it gives up. For each of the 450 held-out problems this script samples
``--orders`` random orders, writes the trace for every patience from one attempt to a full search
with the task's own trace writer, and counts its tokens with the model's tokenizer (plus the EOS),
as `longrl eval` counts a sampled response. It prints:

- the searcher that never gives up (always correct) and the searchers of one fixed patience;
- the frontier: for each accuracy, the fewest mean tokens any ideal searcher reaches, even one that
  chooses each problem's patience knowing how its search will go on average (the lower convex hull
  of every problem's patience options, so a bound no random-order searcher can beat);
- the floor of a model that knows the solution before it searches (its first attempt solves);
- with ``--eval``, where measured models stand: their pass@1 and mean tokens, the frontier's tokens
  at their accuracy and at 95% of it, and the share of first attempts that solve against the 1/n
  chance of a random order.

A model can only go below the frontier by guessing better than chance which first step solves.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
from pathlib import Path

from responses import attempt_lines  # this folder's response analysis (the script's folder is on sys.path)

from longrl.tasks import countdown


def problem_options(prompt, tokenizer, orders: int, seed: int) -> list[tuple[float, float]]:
    """(accuracy, mean tokens) of the ideal searcher on one problem, for each patience 1..n."""
    numbers, target = prompt.reference["numbers"], prompt.reference["target"]
    n = len(countdown.attempts(numbers, target))
    rng = random.Random(f"{seed}-{prompt.id}")
    traces: list[list[str]] = [[] for _ in range(n)]
    for _ in range(orders):
        state = rng.getstate()
        for patience in range(1, n + 1):
            rng.setstate(state)  # the same order for every patience: only the stopping point moves
            traces[patience - 1].append(countdown.write_trace(
                numbers, target, rng, slip_prob=0.0, patience=patience))
    out = []
    for group in traces:
        ids = tokenizer(group, add_special_tokens=False)["input_ids"]
        correct = [countdown.verify(t, numbers, target).value for t in group]
        out.append((statistics.fmean(correct), statistics.fmean(len(x) + 1 for x in ids)))
    return out


def _solved_first(prompt) -> str:
    """The task's own trace of a search whose first attempt solves (the first random order that does)."""
    numbers, target = prompt.reference["numbers"], prompt.reference["target"]
    for i in range(10_000):
        trace = countdown.write_trace(numbers, target, random.Random(i), slip_prob=0.0, patience=1)
        if countdown.verify(trace, numbers, target).correct:
            return trace
    raise AssertionError(f"{prompt.id}: no order in 10,000 puts a solving step first")


def frontier(options: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Mean (accuracy, tokens) over problems where each problem picks the option maximising
    accuracy − μ·tokens, for a sweep of μ: the points of the lower convex hull."""
    points = []
    for mu in [0.0] + [10 ** (e / 20) for e in range(-80, 21)]:
        picks = [max(opts, key=lambda o: (o[0] - mu * o[1], -o[1])) for opts in options]
        points.append((statistics.fmean(p[0] for p in picks), statistics.fmean(p[1] for p in picks)))
    return sorted(set(points))


def tokens_at(points: list[tuple[float, float]], accuracy: float) -> float:
    """Fewest mean tokens on the frontier at ``accuracy`` (linear between hull points)."""
    for (a0, t0), (a1, t1) in itertools.pairwise(points):
        if a0 <= accuracy <= a1:
            return t0 if a1 == a0 else t0 + (t1 - t0) * (accuracy - a0) / (a1 - a0)
    return points[0][1] if accuracy < points[0][0] else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="a model folder whose tokenizer counts tokens")
    ap.add_argument("--eval", nargs="*", type=Path, default=[], help="eval.jsonl files of `longrl eval`")
    ap.add_argument("--orders", type=int, default=32, help="random search orders per problem")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = countdown.heldout_prompts()
    options = [problem_options(p, tokenizer, args.orders, args.seed) for p in prompts]

    print(f"{len(prompts)} held-out problems, {args.orders} random orders each\n")
    print("| ideal searcher | accuracy | mean tokens | level 1 | level 2 | level 3 |")
    print("|---|---|---|---|---|---|")
    by_level = {lv: [i for i, p in enumerate(prompts) if p.level == lv] for lv in countdown.LEVELS}
    max_n = max(len(o) for o in options)
    for patience in [*range(1, max_n), None]:
        picks = [o[-1] if patience is None else o[min(patience, len(o)) - 1] for o in options]
        levels = " | ".join(f"{100 * statistics.fmean(picks[i][0] for i in idx):.1f}% / "
                            f"{statistics.fmean(picks[i][1] for i in idx):.1f}" for idx in by_level.values())
        name = "never gives up" if patience is None else f"gives up after {patience}"
        print(f"| {name} | {100 * statistics.fmean(p[0] for p in picks):.1f}% | "
              f"{statistics.fmean(p[1] for p in picks):.1f} | {levels} |")
    floor = [len(ids) + 1 for ids in tokenizer([_solved_first(p) for p in prompts],
                                                add_special_tokens=False)["input_ids"]]
    print(f"| knows the solving first step | 100.0% | {statistics.fmean(floor):.1f} | | | |")
    chance = statistics.fmean(o[0][0] for o in options)
    print(f"\nfirst attempt solves by chance (random order): {100 * chance:.1f}%")

    points = frontier(options)
    print("\nfrontier (any ideal searcher, patience chosen per problem):")
    print("| accuracy | fewest mean tokens |")
    print("|---|---|")
    for acc in (0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0):
        print(f"| {100 * acc:.0f}% | {tokens_at(points, acc):.1f} |")

    if args.eval:
        print("\n| model | pass@1 | mean tokens | frontier at its pass@1 | at 95% of it "
              "| first attempt solves |")
        print("|---|---|---|---|---|---|")
    for path in args.eval:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r.get("sample") != "greedy"]
        if not rows:
            raise SystemExit(f"{path}: no sampled rows")
        acc = statistics.fmean(r["reward"] > 0 for r in rows)
        tokens = statistics.fmean(r["tokens"] for r in rows)
        first = statistics.fmean(_first_attempt_solves(r["response"]) for r in rows)
        print(f"| {path.parent.name} | {100 * acc:.1f}% | {tokens:.1f} | {tokens_at(points, acc):.1f} "
              f"({tokens_at(points, acc) / tokens:.2f}x) | {tokens_at(points, 0.95 * acc):.1f} "
              f"({tokens_at(points, 0.95 * acc) / tokens:.2f}x) | {100 * first:.1f}% |")


def _first_attempt_solves(response: str) -> bool:
    lines = attempt_lines(response)
    return bool(lines) and lines[0].endswith("yes")


if __name__ == "__main__":
    main()
