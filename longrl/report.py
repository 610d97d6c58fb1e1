"""``longrl report runs/NAME``: PNG plots and one HTML page from a run directory (DESIGN §10).

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON object a
line per RL iteration), and optionally ``eval.jsonl`` (one line per held-out evaluation, the first
at iteration 0, before RL) and ``summary.json``. The report writes
``plots/*.png`` and ``report.html`` beside them; the trainer calls :func:`write_report` at the end
of a run, and the CLI verb calls it on any run, finished or still going.

The reader is forgiving by design, because it runs on live and crashed runs: any key may be
missing from any line, non-numeric or non-finite values are skipped, a line that does not parse
(a run killed mid-write leaves a truncated last line) is skipped and counted on the page, and a
resumed run that re-logs iterations after its last checkpoint is plotted with the later line
winning. A plot whose keys never appear is not drawn.

matplotlib is imported only when plots are drawn (``longrl --help`` stays fast), and through its
object API with the Agg canvas, so no global pyplot state or display is touched.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longrl.errors import UserError

REQUIRED = ("config.yaml", "metrics.jsonl")
LEVEL_PREFIX = "eval/pass1/level_"


@dataclass(frozen=True)
class Panel:
    """One axes of a figure: a title, a y label, and the metric keys drawn on it."""

    title: str
    ylabel: str
    keys: tuple[str, ...] = ()
    prefix: str | None = None  # also draw every key starting with this (per-level curves)
    suffix: str | None = None  # ... and ending with this (eval/task/<name>/pass1)
    heldout: bool = False  # also read eval.jsonl, which alone holds the evaluation before RL (iteration 0)


# file name -> the panels of that figure, drawn side by side.
FIGURES: dict[str, tuple[Panel, ...]] = {
    "reward.png": (
        Panel("Training reward", "reward", ("reward/mean", "reward/task_mean", "train/accuracy")),
    ),
    "accuracy.png": (
        Panel("Held-out accuracy", "accuracy", ("eval/pass1", "eval/greedy"), prefix=LEVEL_PREFIX, heldout=True),
    ),
    # with rewards.terms: the task reward, each weighted term and the k1.5 length term (they add up to reward/mean)
    "reward_terms.png": (Panel("Reward terms (weighted)", "reward", prefix="reward/term/"),),
    # a run on several tasks or modalities (data.mix): each one's held-out and training accuracy and length
    "modality.png": (
        Panel("Held-out pass@1 per task", "accuracy", prefix="eval/task/", suffix="/pass1", heldout=True),
        Panel("Held-out pass@1 per modality", "accuracy", prefix="eval/modality/", suffix="/pass1", heldout=True),
        Panel("Training accuracy per modality", "accuracy", prefix="train/accuracy/"),
        Panel("Response length per modality", "tokens", prefix="response/len_mean/"),
    ),
    "length.png": (
        Panel("Response length", "tokens", ("response/len_mean", "response/len_p90")),
        Panel("Responses at the length cap", "fraction", ("response/clip_frac",)),
    ),
    "length_penalty.png": (Panel("Length-penalty weight", "w_len", ("length_penalty/weight",)),),
    "throughput.png": (
        Panel("Throughput", "tokens / s", ("perf/tokens_per_s",)),
        Panel("Iteration time", "s", ("time/iter_s",)),
    ),
    "optim.png": (
        Panel("Loss", "loss", ("loss",)),
        Panel("Gradient norm (before clipping)", "norm", ("grad_norm",)),
        Panel("Learning rate", "lr", ("lr",)),
    ),
}


# ---- reading ------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The JSON objects of a JSONL file and the 1-based numbers of the lines that were skipped.

    Blank lines are ignored; a line that is not a JSON object (truncated, corrupt) is skipped and
    its number returned so the page can say so — nothing is dropped silently.
    """
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad.append(lineno)
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                bad.append(lineno)
    return records, bad


def _number(v: Any) -> float | None:
    """``v`` as a finite float, or None (bools, strings, None, NaN and inf are not plotted)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(x, y) of one metric, sorted by x, one point per x (the last logged wins).

    x is the record's ``iter`` when numeric; a record without one continues from the previous
    record's x + 1 (0 for the first), so a missing ``iter`` never stops a line from plotting.
    """
    points: dict[float, float] = {}
    x = -1.0
    for rec in records:
        it = _number(rec.get("iter"))
        x = it if it is not None else x + 1
        y = _number(rec.get(key))
        if y is not None:
            points[x] = y
    xs = sorted(points)
    return xs, [points[k] for k in xs]


def _level_keys(records: list[dict[str, Any]], prefix: str) -> list[str]:
    keys = {k for rec in records for k in rec if isinstance(k, str) and k.startswith(prefix)}

    def natural(k: str) -> tuple:  # level_2 before level_10
        return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k))

    return sorted(keys, key=natural)


# ---- plotting -----------------------------------------------------------------------------------


def panel_lines(panel: Panel, records: list[dict[str, Any]],
                evals: list[dict[str, Any]] | None = None) -> list[tuple[str, list[float], list[float]]]:
    """(key, x, y) of every curve of ``panel`` that has data.

    A held-out panel joins the ``eval/*`` values of metrics.jsonl (logged at each evaluation during
    RL) with eval.jsonl's rows, which add the evaluation of the starting policy at iteration 0 — it
    precedes the first RL iteration, so no metrics line carries it. Where both hold an iteration,
    eval.jsonl wins; its rows without a numeric ``iter`` (not an evaluation of this run) are left out.
    """
    evals = [r for r in evals or [] if _number(r.get("iter")) is not None] if panel.heldout else []
    keys = list(panel.keys)
    if panel.prefix:
        keys += [k for k in _level_keys(records + evals, panel.prefix)
                 if k not in keys and (panel.suffix is None or k.endswith(panel.suffix))]
    lines = []
    for k in keys:
        points = dict(zip(*series(records, k))) | dict(zip(*series(evals, k)))
        xs = sorted(points)
        if xs:
            lines.append((k, xs, [points[x] for x in xs]))
    return lines


def plot_figures(records: list[dict[str, Any]], out_dir: Path,
                 evals: list[dict[str, Any]] | None = None) -> list[Path]:
    """Draw every figure of :data:`FIGURES` that has data; returns the written PNG paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, panels in FIGURES.items():
        drawn = []
        for panel in panels:
            lines = panel_lines(panel, records, evals)
            if lines:
                drawn.append((panel, lines))
        if not drawn:
            continue
        fig = Figure(figsize=(6.4 * len(drawn), 4.0), layout="constrained")
        FigureCanvasAgg(fig)
        for i, (panel, lines) in enumerate(drawn):
            ax = fig.add_subplot(1, len(drawn), i + 1)
            for key, xs, ys in lines:
                level = key.startswith(LEVEL_PREFIX)
                label = key.removeprefix("eval/pass1/") if level else key
                # a single point draws no line: give short curves markers so they still show; each
                # held-out point is an evaluation (a few per run), so it is always marked
                marker = "o" if panel.heldout or len(xs) < 30 else None
                ax.plot(xs, ys, label=label, marker=marker, markersize=4 if panel.heldout else 3,
                        linestyle=":" if level else "-", linewidth=1.0 if level else 1.6)
            ax.set_title(panel.title)
            ax.set_xlabel("iteration")
            ax.set_ylabel(panel.ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        path = out_dir / name
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


# ---- the page -----------------------------------------------------------------------------------


def html_table(rows: list[tuple[str, Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        if isinstance(v, (dict, list)):
            return json.dumps(v, ensure_ascii=False)
        return str(v)

    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(cell(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _eval_table(records: list[dict[str, Any]], max_rows: int = 50) -> str:
    # eval.jsonl rows are flat records (benchmark, pass@1, mean tokens, ...); show their scalars.
    rows = records[-max_rows:]
    cols: list[str] = []
    for r in rows:
        cols += [k for k, v in r.items() if k not in cols and not isinstance(v, (dict, list))]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = ""
    for r in rows:
        cells = [r.get(c, "") for c in cols]
        body += "<tr>" + "".join(
            f"<td>{html.escape(f'{v:.4g}' if isinstance(v, float) else str(v))}</td>" for v in cells
        ) + "</tr>"
    note = f"<p>last {max_rows} of {len(records)} rows</p>" if len(records) > max_rows else ""
    return f"{note}<table><tr>{head}</tr>{body}</table>"


CSS = """body{font-family:sans-serif;max-width:1400px;margin:1em auto;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}
img{max-width:100%;display:block;margin:.5em 0}pre{background:#f6f6f6;padding:.8em;overflow:auto}
.warn{color:#a40}"""


def _page(run_dir: Path, pngs: list[Path], records: list[dict[str, Any]], notes: list[str],
          summary: Any, evals: list[dict[str, Any]], config_text: str) -> str:
    esc = html.escape
    head = f"<meta charset='utf-8'><title>longrl report: {esc(run_dir.name)}</title><style>{CSS}</style>"
    parts = [f"<!doctype html><html><head>{head}</head><body>", f"<h1>longrl run {esc(run_dir.name)}</h1>"]
    iters = [x for r in records if (x := _number(r.get("iter"))) is not None]
    span = f", iterations {iters[0]:g} to {iters[-1]:g}" if iters else ""
    parts.append(f"<p>{len(records)} metric records{span}.</p>")
    parts += [f"<p class='warn'>{esc(n)}</p>" for n in notes]
    parts.append("<h2>Summary</h2>")
    if isinstance(summary, dict):
        parts.append(html_table(list(summary.items())))
    else:
        parts.append(f"<p>{esc(str(summary))}</p>")
    parts.append(_terms_table(records))
    parts.append("<h2>Plots</h2>")
    if not pngs:
        parts.append("<p>No plottable metrics yet.</p>")
    for p in pngs:
        rel = p.relative_to(run_dir).as_posix()
        parts.append(f"<img src='{esc(rel, quote=True)}' alt='{esc(p.stem)}'>")
    if evals:
        parts += ["<h2>Evaluation (eval.jsonl)</h2>", _eval_table(evals)]
    parts += ["<h2>Config (config.yaml)</h2>", f"<pre>{esc(config_text)}</pre>", "</body></html>"]
    return "\n".join(parts)


def _terms_table(records: list[dict[str, Any]], last: int = 10) -> str:
    """With ``rewards.terms``: each weighted reward term's mean over the run and over its last iterations."""
    keys = _level_keys(records, "reward/term/")
    if not keys:
        return ""
    rows = [("term", "mean over the run", f"mean over the last {last} iterations")]
    for k in keys + ["reward/mean"]:
        ys = series(records, k)[1]
        if ys:
            name = "total (reward/mean)" if k == "reward/mean" else k.removeprefix("reward/term/")
            rows.append((name, sum(ys) / len(ys), sum(ys[-last:]) / len(ys[-last:])))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{v:.4g}</td>" if isinstance(v, float) else f"<td>{html.escape(v)}</td>"
                                    for v in r) + "</tr>" for r in rows[1:])
    return f"<h2>Reward terms (rewards.terms, weighted)</h2><table><tr>{head}</tr>{body}</table>"


def write_report(run_dir: Path) -> Path:
    """Draw ``run_dir/plots/*.png`` and write ``run_dir/report.html``; returns the HTML path.

    Raises :class:`~longrl.errors.UserError` when ``run_dir`` is not a run directory (it lacks
    ``config.yaml`` or ``metrics.jsonl``). Never fails on the content of the metrics.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory; expected a run directory such as runs/NAME")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise UserError(f"{run_dir} is not a longrl run directory: missing {', '.join(missing)}")

    records, bad = read_jsonl(run_dir / "metrics.jsonl")
    notes = []
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        notes.append(f"metrics.jsonl: skipped {len(bad)} unreadable line(s): {shown}")
    evals: list[dict[str, Any]] = []
    if (run_dir / "eval.jsonl").is_file():
        evals, bad_eval = read_jsonl(run_dir / "eval.jsonl")
        if bad_eval:
            notes.append(f"eval.jsonl: skipped {len(bad_eval)} unreadable line(s)")
    summary: Any = "no summary.json (the run has not finished)"
    if (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        except ValueError as e:
            summary = f"summary.json is not valid JSON: {e}"
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8", errors="replace")

    pngs = plot_figures(records, run_dir / "plots", evals)
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(_page(run_dir, pngs, records, notes, summary, evals, config_text), encoding="utf-8")
    os.replace(tmp, out)  # a reader (or a crash) never sees half a page
    return out


# ---- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory, e.g. runs/NAME")


def run(args: argparse.Namespace) -> int:
    out = write_report(args.run_dir)
    print(f"wrote {out}")
    return 0
