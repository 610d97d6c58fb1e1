"""Learning curves of several runs on one figure: held-out pass@1, training-batch accuracy, response length.

    python bench/experiments/curves.py --run "preset=runs/q120cos_s*" --run "mask=runs/q120mt_s*" \
        --out docs/quickstart_curves.png

Each ``--run LABEL=GLOB`` is one group of seeds, drawn in one colour: a thin line per run and a thick
line for the mean over its runs. Held-out pass@1 starts at the run's ``summary.json`` ``initial``
evaluation (iteration 0) and follows every ``eval/pass1`` in ``metrics.jsonl`` (``eval.every``);
the training curves are averaged over a sliding window of iterations.
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np

from longrl.report import read_jsonl, series

PANELS = (  # (title, y label, metric key, window of the moving average)
    ("Held-out pass@1 (450 problems x 4 samples)", "pass@1", "eval/pass1", 1),
    ("Training-batch accuracy (10-iteration mean)", "accuracy", "train/accuracy", 10),
    ("Mean response tokens in training (10-iteration mean)", "tokens", "response/len_mean", 10),
)


def curve(run: Path, key: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    records, _ = read_jsonl(run / "metrics.jsonl")
    xs, ys = series(records, key)
    if key.startswith("eval/"):
        initial = json.loads((run / "summary.json").read_text()).get("initial", {})
        if key in initial:
            xs, ys = [0.0, *xs], [initial[key], *ys]
    x, y = np.asarray(xs), np.asarray(ys)
    if window > 1 and len(y) >= window:
        y = np.convolve(y, np.ones(window) / window, mode="valid")
        x = x[window - 1 :]
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="LABEL=GLOB",
                    help="a group of run directories (one per seed), drawn in one colour")
    ap.add_argument("--out", required=True, help="the PNG to write")
    args = ap.parse_args()

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = []
    for spec in args.run:
        label, _, pattern = spec.partition("=")
        runs = sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / "metrics.jsonl").is_file())
        if not label or not runs:
            raise SystemExit(f"--run {spec!r}: expected LABEL=GLOB matching run directories with metrics.jsonl")
        groups.append((label, runs))

    fig = Figure(figsize=(6.0 * len(PANELS), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (title, ylabel, key, window) in enumerate(PANELS):
        ax = fig.add_subplot(1, len(PANELS), i + 1)
        for g, (label, runs) in enumerate(groups):
            color = f"C{g}"
            curves = [curve(r, key, window) for r in runs]
            for x, y in curves:
                ax.plot(x, y, color=color, alpha=0.3, linewidth=0.8, marker="o" if len(x) < 30 else None,
                        markersize=2)
            n = min(len(y) for _, y in curves)
            if n:
                mean = np.mean([y[:n] for _, y in curves], axis=0)
                ax.plot(curves[0][0][:n], mean, color=color, linewidth=2.0,
                        marker="o" if n < 30 else None, markersize=4, label=f"{label} (mean of {len(runs)})")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("RL iteration")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
