"""Token efficiency: accuracy against mean response length for several models (k1.5 Figure 7).

Each model is evaluated by :func:`longrl.eval.runner.evaluate` on the same prompts, seeds and
token limit. The table adds ``correct / 1k tokens`` (pass@1 divided by the mean response length,
× 1000): how many correct answers a thousand generated tokens buy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from longrl.types import Prompt


@dataclass
class ModelPoint:
    label: str
    model: str
    pass1: float  # mean over prompts of correct samples / n
    greedy: float | None
    tokens_mean: float  # mean response length in tokens over all samples
    tokens_median: float
    tokens_p90: float
    per_level: dict[str, float]

    @property
    def correct_per_1k_tokens(self) -> float:
        return 1000.0 * self.pass1 / self.tokens_mean if self.tokens_mean else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"correct_per_1k_tokens": self.correct_per_1k_tokens}


def evaluate_models(models: Sequence[str | Path], labels: Sequence[str], prompts: Sequence[Prompt], *,
                    n: int, temperature: float, max_new_tokens: int, seed: int = 0,
                    chat_template: bool = False, greedy: bool = True, progress: bool = True,
                    rewards=None) -> list[ModelPoint]:
    """Each model's point on the same prompts; ``rewards``: the run config's rewards section (None: defaults).
    A vision-language model gets its own processor (image prompts need one; a text model refuses them)."""
    from longrl.eval.runner import evaluate
    from longrl.models.loading import load_model, stop_token_ids
    from longrl.models.vision import load_processor
    from longrl.rewards.compose import build_router
    from longrl.rollout.hf import HFEngine

    points = []
    router = build_router(rewards, tasks={p.task for p in prompts})
    try:
        for path, label in zip(models, labels):
            if progress:
                print(f"evaluating {label} ({path}) on {len(prompts)} prompts x {n} samples ...", flush=True)
            model, tok = load_model(path)
            engine = HFEngine(model, stop_token_ids(tok, path, chat_template), tok.pad_token_id)
            r = evaluate(engine, tok, prompts, router, n=n, temperature=temperature,
                         max_new_tokens=max_new_tokens, greedy=greedy, seed=seed, chat_template=chat_template,
                         processor=load_processor(path))
            points.append(ModelPoint(label, str(path), r.pass1, r.greedy, r.len_mean, r.len_median,
                                     r.len_p90, r.per_level))
            del model, engine
    finally:
        router.close()
    return points


def format_table(points: Sequence[ModelPoint]) -> str:
    """A fixed-width table; the last two columns are relative to the first model (the baseline)."""
    base = points[0]
    head = ["model", "pass@1", "greedy", "tokens", "median", "p90", "correct/1k tok", "Δpass@1", "tokens ×"]
    rows = [head]
    for p in points:
        rows.append([p.label, f"{p.pass1:.4f}", "-" if p.greedy is None else f"{p.greedy:.4f}",
                     f"{p.tokens_mean:.1f}", f"{p.tokens_median:.0f}", f"{p.tokens_p90:.0f}",
                     f"{p.correct_per_1k_tokens:.2f}", f"{p.pass1 - base.pass1:+.4f}",
                     f"{p.tokens_mean / base.tokens_mean:.2f}" if base.tokens_mean else "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_points(points: Sequence[ModelPoint], path: Path, title: str) -> Path:
    """Accuracy (pass@1) against mean response tokens, one labelled point per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, p in enumerate(points):
        ax.scatter([p.tokens_mean], [p.pass1], s=64 if i == 0 else 40, marker="*" if i == 0 else "o",
                   zorder=3, label=p.label)
        ax.annotate(p.label, (p.tokens_mean, p.pass1), textcoords="offset points", xytext=(6, 4),
                    fontsize="small")
    ax.set_xlabel("mean response length (tokens)")
    ax.set_ylabel("pass@1")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    ax.legend(fontsize="small")  # points of equal length and accuracy overlap; the legend still lists them
    fig.savefig(path, dpi=110)
    return path
