"""The curation report page: the funnel, the difficulty histogram and the tags before and after."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any


def _figure(width: float = 6.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def plot_funnel(report: dict[str, Any], path: Path) -> Path | None:
    stages = report.get("stages") or []
    if not stages:
        return None
    names = ["input"] + [s["stage"] for s in stages]
    counts = [stages[0]["in"]] + [s["out"] for s in stages]
    fig, ax = _figure()
    bars = ax.barh(range(len(names))[::-1], counts, color="#4a7ab5")
    ax.set_yticks(range(len(names))[::-1], names)
    for bar, c in zip(bars, counts):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {c}", va="center", fontsize="small")
    ax.set_xlabel("prompts left after the stage")
    ax.set_title("curation funnel")
    fig.savefig(path, dpi=100)
    return path


def plot_difficulty(report: dict[str, Any], path: Path) -> Path | None:
    hist = (report.get("difficulty") or {}).get("solved_per_prompt")
    if not hist:
        return None
    fig, ax = _figure()
    ax.bar(list(hist), list(hist.values()), color="#5a9e6f")
    ax.set_xlabel("samples solved (pass rate = solved / n)")
    ax.set_ylabel("prompts")
    ax.set_title("difficulty (before the difficulty stage's drops)")
    fig.savefig(path, dpi=100)
    return path


def plot_tags(report: dict[str, Any], path: Path) -> Path | None:
    tags = report.get("tags") or {}
    before, after = tags.get("before") or {}, tags.get("final") or tags.get("after") or {}
    names = sorted(set(before) | set(after), key=lambda t: -before.get(t, 0))
    if not names:
        return None
    fig, ax = _figure(max(6.4, 0.6 * len(names) + 2))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [before.get(t, 0) for t in names], width=0.4, label="before")
    ax.bar([x + 0.2 for x in xs], [after.get(t, 0) for t in names], width=0.4, label="kept")
    ax.set_xticks(list(xs), names, rotation=30, ha="right")
    ax.set_ylabel("prompts")
    ax.set_title("domain tags before and after curation")
    ax.legend()
    fig.savefig(path, dpi=100)
    return path


def write_html(out: Path, report: dict[str, Any]) -> Path:
    from longrl.report import CSS, html_table

    esc = html.escape
    pngs = [p for p in (plot_funnel(report, out / "curation_funnel.png"),
                        plot_difficulty(report, out / "curation_difficulty.png"),
                        plot_tags(report, out / "curation_tags.png")) if p is not None]
    counts = report.get("counts", {})
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>longrl curation</title><style>{CSS}</style>"
             "</head><body>", f"<h1>longrl curation of {esc(str(report.get('input', '')))}</h1>",
             f"<p>{counts.get('in', 0)} prompts in: {counts.get('kept', 0)} kept (kept.jsonl), "
             f"{counts.get('rejected', 0)} rejected (rejected.jsonl).</p>", "<h2>Stages</h2>"]
    stages = report.get("stages") or []
    parts.append("<table><tr><th>stage</th><th>in</th><th>dropped</th><th>out</th><th>by rule</th></tr>" + "".join(
        f"<tr><td>{esc(s['stage'])}</td><td>{s['in']}</td><td>{s['dropped']}</td><td>{s['out']}</td>"
        f"<td>{esc(json.dumps(s['rules']))}</td></tr>" for s in stages) + "</table>")
    parts += [f"<img src='{esc(p.name, quote=True)}' alt='{esc(p.stem)}'>" for p in pngs]
    for key, title in (("decontamination", "Decontamination"), ("difficulty", "Difficulty"),
                       ("hack", "Easy-to-hack filter"), ("tags", "Tags")):
        if report.get(key):
            parts += [f"<h2>{title}</h2>", html_table(list(report[key].items()))]
    parts += ["<h2>Config</h2>", f"<pre>{esc(json.dumps(report.get('config', {}), indent=2))}</pre>", "</body></html>"]
    path = out / "curation_report.html"
    tmp = out / ".curation_report.html.tmp"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path
