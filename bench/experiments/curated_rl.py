"""RL from a curated prompt set against the same run from the uncurated set (built-in task).

    python bench/experiments/curated_rl.py --warm runs/_warm/quickstart [--pool 1000] [--seed 0]

1. Draws ``--pool`` training prompts of the built-in task and writes them to ``uncurated.jsonl``;
   writes the 450 held-out prompts to ``heldout.jsonl`` (never in the pool: the task's training
   stream skips them).
2. ``longrl curate`` the pool with the warm model (every stage on, the defaults: n = 10 at
   temperature 1, always-solved prompts and easy-to-hack prompts dropped).
3. Two ``longrl train`` runs, the quickstart's settings otherwise, from the same warm checkpoint and
   seed, for the same number of iterations: one on ``uncurated.jsonl``, one on the curated
   ``kept.jsonl``; both evaluated on ``heldout.jsonl``.

Prints the held-out pass@1 of each run before and after RL, and the curation counts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def sh(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "longrl.cli", *args], check=True)


def last_eval(run: Path) -> tuple[float, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/pass1" in r]
    return evals[0]["eval/pass1"], evals[-1]["eval/pass1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warm", required=True, help="the quickstart's warm (SFT) checkpoint folder")
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/curated_rl")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra train --set")
    args = ap.parse_args()

    from longrl.data.sources import prompt_row
    from longrl.tasks.countdown import heldout_prompts, train_prompts

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stream = train_prompts(1000 + args.seed)
    pool = [next(stream) for _ in range(args.pool)]
    (out / "uncurated.jsonl").write_text("".join(json.dumps(prompt_row(p)) + "\n" for p in pool))
    (out / "heldout.jsonl").write_text("".join(json.dumps(prompt_row(p)) + "\n" for p in heldout_prompts()))
    sh("curate", "--in", str(out / "uncurated.jsonl"), "--model", args.warm, "--out", str(out / "curated"),
       "--set", f"curate.seed={args.seed}")
    report = json.loads((out / "curated" / "curation_report.json").read_text())
    results = {}
    for name, data in (("uncurated", out / "uncurated.jsonl"), ("curated", out / "curated" / "kept.jsonl")):
        run = out / f"rl_{name}"
        if not (run / "summary.json").is_file():
            sh("train", "--out", str(out), "--name", run.name, "--quiet", "--set", f"data.task={data}",
               "--set", f"data.eval_file={out / 'heldout.jsonl'}", "--set", f"sft.warm_dir={args.warm}",
               "--set", f"seed={args.seed}", *[x for o in args.overrides for x in ("--set", o)])
        results[name] = last_eval(run)
    print(json.dumps({"curation": report["counts"], "stages": report["stages"], "results": results}, indent=1))
    print("\n| prompt set | prompts | held-out pass@1 before RL | after RL | change |\n|---|---|---|---|---|")
    sizes = {"uncurated": args.pool, "curated": report["counts"]["kept"]}
    for name, (before, after) in results.items():
        print(f"| {name} | {sizes[name]} | {before:.4f} | {after:.4f} | {100 * (after - before):+.1f} |")


if __name__ == "__main__":
    main()
