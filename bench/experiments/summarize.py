"""Print the held-out figures of finished runs side by side (the tables in docs/benchmarks.md).

    python bench/experiments/summarize.py runs/lp_s0 runs/nolp_s0 ...
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def row(run: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    a, b = s["initial"], s["final"]
    return {"run": run.name, "pass1_start": a["eval/pass1"], "pass1": b["eval/pass1"],
            "gain_points": 100 * (b["eval/pass1"] - a["eval/pass1"]), "greedy": b["eval/greedy"],
            "pass_k": b["eval/pass@k"], "tokens_start": a["eval/len_mean"], "tokens": b["eval/len_mean"],
            "p90": b["eval/len_p90"], "L3": b.get("eval/pass1/level_3", float("nan")),
            "trained_samples": sum(m.get("train/groups", 0) for m in metrics) * _k(run),
            "rl_s": sum(m["time/iter_s"] for m in metrics)}


def _k(run: Path) -> int:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["rollout"]["k"]


def main(paths: list[str]) -> None:
    rows = [row(Path(p)) for p in paths if (Path(p) / "summary.json").exists()]
    cols = ["pass1_start", "pass1", "gain_points", "greedy", "pass_k", "L3", "tokens_start", "tokens", "p90",
            "trained_samples", "rl_s"]
    print(f"{'run':12}" + "".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(f"{r['run']:12}" + "".join(f"{r[c]:>16.3f}" if isinstance(r[c], float) else f"{r[c]:>16}"
                                         for c in cols))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["run"].rsplit("_s", 1)[0], []).append(r)
    for name, rs in groups.items():
        if len(rs) > 1:
            print(f"{name + ' mean':12}" + "".join(f"{statistics.mean(r[c] for r in rs):>16.3f}" for c in cols)
                  + f"   ({len(rs)} seeds)")


if __name__ == "__main__":
    main(sys.argv[1:])
