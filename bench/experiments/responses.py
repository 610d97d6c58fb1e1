"""What the sampled responses of a countdown evaluation look like, from `eval.jsonl` files.

    longrl eval --model runs/_warm/KEY --bench countdown --n 4 --seed 0 --out runs/analysis/sft
    python bench/experiments/responses.py runs/analysis/sft/eval.jsonl runs/analysis/rl/eval.jsonl

For each file: pass@1, mean tokens, the share of responses that give up, repeat an attempt line, or
stop at the length cap; pass@1 of the responses that do neither of the first two; how often the
first attempt line is already the solution and how long such a response is; the share that is
correct within a token budget (default: half the first file's mean); and the greedy rows' accuracy.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

VERDICTS = ("over", "under", "yes")


def attempt_lines(response: str) -> list[str]:
    return [line.strip() for line in response.split("\n") if line.rstrip().endswith(VERDICTS)]


def repeats(response: str) -> bool:
    lines = attempt_lines(response)
    return len(set(lines)) < len(lines)


def gives_up(response: str) -> bool:
    return "give up" in response


def share(rows: list[dict], pred) -> float:
    return sum(1 for r in rows if pred(r)) / len(rows) if rows else float("nan")


def stats(rows: list[dict], budget: float) -> dict[str, float]:
    sampled = [r for r in rows if r.get("sample") != "greedy"]
    greedy = [r for r in rows if r.get("sample") == "greedy"]
    correct = [r for r in sampled if r["reward"] > 0]
    first = [r for r in correct if len(attempt_lines(r["response"])) == 1]
    plain = [r for r in sampled if not gives_up(r["response"]) and not repeats(r["response"])]
    return {
        "responses": len(sampled),
        "pass@1": share(sampled, lambda r: r["reward"] > 0),
        "mean tokens": statistics.fmean(r["tokens"] for r in sampled),
        "give up": share(sampled, lambda r: gives_up(r["response"])),
        "repeat an attempt line": share(sampled, lambda r: repeats(r["response"])),
        "stopped at the cap": share(sampled, lambda r: r["stop"] == "max_length"),
        "pass@1, no give-up, no repeat": share(plain, lambda r: r["reward"] > 0),
        "correct on the first attempt": len(first) / len(sampled),
        "tokens, correct first attempt (median)": statistics.median(r["tokens"] for r in first) if first else float("nan"),
        f"correct within {budget:.0f} tokens": share(sampled, lambda r: r["reward"] > 0 and r["tokens"] <= budget),
        "greedy": share(greedy, lambda r: r["reward"] > 0),
        "greedy: repeat an attempt line": share(greedy, lambda r: repeats(r["response"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path, help="eval.jsonl files written by `longrl eval`")
    ap.add_argument("--budget", type=float, help="token budget (default: half the first file's mean tokens)")
    args = ap.parse_args()
    tables = []
    for path in args.files:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            raise SystemExit(f"{path}: no rows")
        tables.append(rows)
    budget = args.budget
    if budget is None:
        budget = statistics.fmean(r["tokens"] for r in tables[0] if r.get("sample") != "greedy") / 2
    results = [stats(rows, budget) for rows in tables]
    print("| | " + " | ".join(str(p.parent.name) for p in args.files) + " |")
    print("|---" * (len(args.files) + 1) + "|")
    for key in results[0]:
        cells = [f"{r[key]:.0f}" if key == "responses" else
                 f"{r[key]:.1f}" if "tokens" in key and "within" not in key else f"{100 * r[key]:.1f}%"
                 for r in results]
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
