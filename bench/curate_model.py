"""The model stages of ``longrl curate`` on the built-in task: throughput, and difficulty against levels.

    python bench/curate_model.py --model runs/_warm/quickstart [--prompts 200] [--ns 2 5 10]

For each n it curates the same countdown training prompts from scratch (a fresh output folder,
the hf engine, the quickstart's max length of 192 tokens) and prints prompts curated per minute
for the difficulty stage (n samples a prompt) and the hack filter (8 direct answers a prompt),
the mean pass rate, and Spearman's rho between ``difficulty = 1 - pass rate`` and the task's
levels (1-3). Each n runs in its own process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def curate(model: str, prompts: int, n: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "longrl.cli", "curate", "--in", "countdown", "--limit", str(prompts),
           "--model", model, "--out", str(out), "--quiet", "--set", f"curate.n={n}"]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    report = json.loads((out / "curation_report.json").read_text())
    report["wall_s"] = time.time() - t0
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the quickstart's warm checkpoint (or any model folder)")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--ns", type=int, nargs="+", default=[2, 5, 10])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.ns:
            r = curate(args.model, args.prompts, n, Path(tmp) / f"n{n}")
            d, h = r["difficulty"], r["hack"]
            rows.append({"n": n, "prompts": d["throughput"]["prompts_sampled"],
                         "difficulty_prompts_per_min": d["throughput"]["prompts_per_min"],
                         "hack_prompts_per_min": h["throughput"]["prompts_per_min"],
                         "mean_pass_rate": d["mean_pass_rate"], "spearman_rho": d.get("spearman_difficulty_vs_level"),
                         "mean_difficulty_per_level": d.get("mean_difficulty_per_level"),
                         "too_easy": next(s["dropped"] for s in r["stages"] if s["stage"] == "difficulty"),
                         "easy_to_hack": h["dropped"], "kept": r["counts"]["kept"], "wall_s": round(r["wall_s"], 1)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| n | prompts | difficulty prompts/min | hack prompts/min | mean pass rate | Spearman rho "
          "(difficulty, level) | mean difficulty per level | too easy | easy to hack | kept | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['prompts']} | {r['difficulty_prompts_per_min']} | {r['hack_prompts_per_min']} | "
              f"{r['mean_pass_rate']} | {r['spearman_rho']} | {r['mean_difficulty_per_level']} | {r['too_easy']} | "
              f"{r['easy_to_hack']} | {r['kept']} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
