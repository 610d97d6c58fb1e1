"""`longrl report` and the metrics logger: a fake run directory in, plots and a page out."""

from __future__ import annotations

import json
import os
import re
import sys
import types
from pathlib import Path

import pytest

from longrl.cli import main as cli_main
from longrl.errors import UserError
from longrl.logging_backends import MetricsLogger
from longrl.report import FIGURES, panel_lines, read_jsonl, series, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(root: Path, *, truncated_tail: bool = True) -> Path:
    run = root / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: tiny\nnote: '<script>alert(1)</script>'\n")
    lines = []
    for it in range(6):
        rec = {
            "iter": it,
            "reward/mean": 0.1 * it,
            "reward/task_mean": 0.1 * it + 0.05,
            "reward/term/task": 0.1 * it + 0.05, "reward/term/format": 0.02, "reward/term/length": -0.07,
            "train/accuracy": 0.1 * it,
            "train/accuracy/image": 0.05 * it, "train/accuracy/text": 0.1 * it,
            "response/len_mean/image": 90 + 10 * it, "response/len_mean/text": 110 + 10 * it,
            "response/len_mean": 100 + 10 * it,
            "response/len_p90": 150 + 10 * it,
            "response/clip_frac": 0.01 * it,
            "length_penalty/weight": 0.0 if it < 3 else 0.5,
            "perf/tokens_per_s": 1000.0 + it,
            "time/iter_s": 2.5,
            "loss": 1.0 / (it + 1),
            "grad_norm": 3.0 - 0.1 * it,
        }
        if it % 2 == 0:  # evaluation every other iteration: keys missing from odd lines
            rec |= {"eval/pass1": 0.2 + 0.05 * it, "eval/greedy": 0.25 + 0.05 * it,
                    "eval/pass1/level_1": 0.9, "eval/pass1/level_2": 0.5, "eval/pass1/level_10": 0.01,
                    "eval/task/scenes/pass1": 0.3, "eval/task/scenes/len_mean": 40.0,
                    "eval/modality/image/pass1": 0.3, "eval/modality/image/prompts": 450}
        lines.append(json.dumps(rec))
    lines[2] = json.dumps({"iter": 2, "loss": "nan?", "grad_norm": None, "reward/mean": [1, 2]})  # junk values
    text = "\n".join(lines) + "\n"
    if truncated_tail:
        text += '{"iter": 6, "reward/mean": 0.'  # the process died mid-write
    (run / "metrics.jsonl").write_text(text)
    (run / "summary.json").write_text(json.dumps({"final/pass1": 0.45, "iters": 6, "model": "<tiny>"}))
    (run / "eval.jsonl").write_text(json.dumps({"benchmark": "math500", "pass1": 0.4, "tokens": 812}) + "\n")
    return run


def test_write_report_makes_every_plot_and_page(tmp_path):
    run = fake_run(tmp_path)
    out = write_report(run)
    assert out == run / "report.html"
    page = out.read_text()
    pngs = sorted((run / "plots").glob("*.png"))
    assert {p.name for p in pngs} == set(FIGURES)  # every figure has data in this run
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 2000
        assert f"src='plots/{p.name}'" in page  # relative path, so the run dir can be moved
    # config is escaped inside a <pre>, never live markup
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert re.search(r"<pre>model: tiny", page)
    # rewards.terms: one table of the weighted terms (the length term and the total included)
    assert "<h2>Reward terms (rewards.terms, weighted)</h2>" in page and "<td>format</td><td>0.02</td>" in page
    # summary as a table, values escaped
    assert "<th>final/pass1</th><td>0.45</td>" in page and "&lt;tiny&gt;" in page
    assert "math500" in page  # eval.jsonl table
    assert "skipped 1 unreadable line(s): 7" in page  # the truncated tail is counted, not hidden
    assert not (run / "report.html.tmp").exists()


def test_series_skips_missing_nonnumeric_and_duplicate_iters(tmp_path):
    objs = [
        {"iter": 0, "loss": 1.0},
        {"iter": 1},  # missing key
        {"iter": 2, "loss": "x"},  # non-numeric
        {"iter": 3, "loss": True},  # a bool is not a number to plot
        {"iter": 4, "loss": float("nan")},
        {"iter": 5, "loss": 0.5},
        {"iter": 5, "loss": 0.4},  # a resumed run re-logged iteration 5: the later line wins
        {"loss": 0.3},  # no iter: continues from the previous x
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in objs) + "\n\n[1, 2]\n")
    records, bad = read_jsonl(path)
    assert bad == [10]  # the blank line 9 is ignored, the non-object line 10 is reported
    assert series(records, "loss") == ([0.0, 5.0, 6.0], [1.0, 0.4, 0.3])
    assert series(records, "absent") == ([], [])


def test_missing_figures_are_skipped(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    (run / "metrics.jsonl").write_text('{"iter": 0, "loss": 2.0}\n{"iter": 1, "loss": 1.5}\n')
    page = write_report(run).read_text()
    assert [p.name for p in (run / "plots").glob("*.png")] == ["optim.png"]
    assert "plots/optim.png" in page and "plots/reward.png" not in page
    assert "no summary.json" in page


def heldout_run(root: Path, iters: int = 120) -> Path:
    """A run laid out as ``longrl.train.loop`` writes it with ``eval.every=0``: the starting policy is
    evaluated at iteration 0 (eval.jsonl only: no RL iteration has run, so no metrics line), the
    final policy at the last iteration (eval.jsonl, and merged into that iteration's metrics line)."""
    run = root / "r"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")

    def ev(pass1: float, level_1: float) -> dict:
        return {"eval/pass1": pass1, "eval/pass@k": pass1 + 0.2, "eval/len_mean": 90.0, "eval/len_p90": 140.0,
                "eval/greedy": pass1 + 0.05, "eval/pass1/level_1": level_1, "eval/time_s": 3.0}

    initial, final = ev(0.10, 0.30), ev(0.40, 0.80)
    metrics = [{"iter": it, "reward/mean": 0.01 * it} | (final if it == iters else {}) for it in range(1, iters + 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run / "eval.jsonl").write_text("".join(json.dumps({"iter": it, **m, "reasons": {"ok": 3, "wrong": 7}}) + "\n"
                                            for it, m in ((0, initial), (iters, final))))
    return run


def test_heldout_accuracy_starts_at_the_evaluation_before_rl(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    run = heldout_run(tmp_path, iters=120)
    panel = FIGURES["accuracy.png"][0]
    records, _ = read_jsonl(run / "metrics.jsonl")
    evals, _ = read_jsonl(run / "eval.jsonl")
    lines = {k: (xs, ys) for k, xs, ys in panel_lines(panel, records, evals)}
    assert list(lines) == ["eval/pass1", "eval/greedy", "eval/pass1/level_1"]
    assert all(xs == [0.0, 120.0] for xs, _ in lines.values())
    assert lines["eval/pass1"][1] == [0.10, 0.40] and lines["eval/greedy"][1] == pytest.approx([0.15, 0.45])
    # without eval.jsonl (an older run) the panel still draws what metrics.jsonl holds
    assert [xs for _, xs, _ in panel_lines(panel, records)] == [[120.0]] * 3

    drawn = []  # what the report actually hands matplotlib for the held-out panel
    plot = Axes.plot

    def spy(ax, xs, ys, **kw):
        drawn.append((ax, kw["label"], list(xs), list(ys), kw["marker"], kw["linestyle"]))
        return plot(ax, xs, ys, **kw)

    monkeypatch.setattr(Axes, "plot", spy)
    write_report(run)
    held = [d for d in drawn if d[0].get_title() == panel.title]  # titles are set after the curves
    assert [d[1] for d in held] == ["eval/pass1", "eval/greedy", "level_1"]
    for _, _, xs, ys, marker, linestyle in held:
        assert xs == [0.0, 120.0] and len(ys) == 2  # the gain from iteration 0, not a lone dot at 120
        assert marker == "o" and linestyle in ("-", ":")  # points joined by a line


def test_empty_metrics_still_make_a_page(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    (run / "metrics.jsonl").write_text("")
    (run / "summary.json").write_text("{not json")
    page = write_report(run).read_text()
    assert "No plottable metrics yet" in page and "summary.json is not valid JSON" in page


def test_not_a_run_dir(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        write_report(tmp_path / "nope")
    run = tmp_path / "half"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    with pytest.raises(UserError) as e:
        write_report(run)
    assert str(run) in str(e.value) and "metrics.jsonl" in str(e.value) and "config.yaml" not in str(e.value)
    (run / "config.yaml").unlink()
    with pytest.raises(UserError, match="config.yaml, metrics.jsonl"):
        write_report(run)


def test_cli_verb(tmp_path, capsys):
    run = fake_run(tmp_path, truncated_tail=False)
    assert cli_main(["report", str(run)]) == 0
    assert (run / "report.html").is_file() and "wrote" in capsys.readouterr().out
    assert cli_main(["report", str(tmp_path / "missing")]) == 2  # one line, no traceback
    assert "error:" in capsys.readouterr().err


def test_report_module_does_not_import_matplotlib():
    import subprocess

    code = "import sys, longrl.report, longrl.logging_backends; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- MetricsLogger ------------------------------------------------------------------------------


def test_metrics_logger_writes_valid_jsonl(tmp_path):
    import numpy as np
    import torch

    log = MetricsLogger(tmp_path / "run", backends=[])
    log.log({"loss": torch.tensor(0.5), "reward/mean": np.float32(0.25), "n": np.int64(3)}, step=0)
    # each line is on disk as soon as log() returns (flushed), before close()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    log.log({"loss": float("nan"), "grad_norm": float("inf"), "reason_counts": {"ok": 3}}, step=1)
    log.close()
    log.close()  # idempotent
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) for line in lines]
    assert recs[0] == {"iter": 0, "loss": 0.5, "reward/mean": 0.25, "n": 3}
    assert recs[1] == {"iter": 1, "loss": None, "grad_norm": None, "reason_counts": {"ok": 3}}


def test_metrics_logger_appends_after_truncated_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"iter": 0, "loss": 1.0}\n{"iter": 1, "lo')
    with MetricsLogger(run, backends=["jsonl"]) as log:  # a resumed run
        log.log({"loss": 0.9}, step=1)
    records, bad = read_jsonl(run / "metrics.jsonl")
    assert bad == [2]
    assert records == [{"iter": 0, "loss": 1.0}, {"iter": 1, "loss": 0.9}]


def test_metrics_logger_backend_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="choose from"):
        MetricsLogger(tmp_path, backends=["mlflow"])
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # makes `import tensorboard` fail
    with pytest.raises(UserError, match="pip install tensorboard"):
        MetricsLogger(tmp_path, backends=["tensorboard"])
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(UserError, match="pip install wandb"):
        MetricsLogger(tmp_path, backends=["wandb"])


def test_metrics_logger_mirrors_to_fake_backends(tmp_path, monkeypatch):
    calls = []

    class Writer:
        def __init__(self, log_dir):
            calls.append(("tb_init", Path(log_dir).name))

        def add_scalar(self, k, v, global_step):
            calls.append(("tb", k, v, global_step))

        def flush(self):
            pass

        def close(self):
            calls.append(("tb_close",))

    class Run:
        def log(self, data, step):
            calls.append(("wandb", data, step))

        def finish(self):
            calls.append(("wandb_finish",))

    monkeypatch.setitem(sys.modules, "tensorboard", types.ModuleType("tensorboard"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        types.SimpleNamespace(SummaryWriter=Writer))
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: calls.append(
        ("wandb_init", kw["name"], kw["config"])) or Run()))
    monkeypatch.setenv("WANDB_MODE", "unset")  # recorded, so the logger's setdefault is undone after
    monkeypatch.delenv("WANDB_MODE")
    log = MetricsLogger(tmp_path / "r1", backends=["tensorboard", "wandb"], config={"lr": 1e-6})
    assert os.environ["WANDB_MODE"] == "offline"
    log.log({"loss": 0.5, "note": "text is not mirrored", "flag": True}, step=7)
    log.close()
    assert calls == [
        ("tb_init", "tb"),
        ("wandb_init", "r1", {"lr": 1e-6}),
        ("tb", "loss", 0.5, 7),
        ("wandb", {"loss": 0.5}, 7),
        ("tb_close",),
        ("wandb_finish",),
    ]


def test_per_task_panels_draw_only_the_pass1_curves(tmp_path):
    records, _ = read_jsonl(fake_run(tmp_path) / "metrics.jsonl")
    task, modality, train, length = FIGURES["modality.png"]
    assert [k for k, _, _ in panel_lines(task, records)] == ["eval/task/scenes/pass1"]
    assert [k for k, _, _ in panel_lines(modality, records)] == ["eval/modality/image/pass1"]
    assert [k for k, _, _ in panel_lines(train, records)] == ["train/accuracy/image", "train/accuracy/text"]
    assert [k for k, _, _ in panel_lines(length, records)] == ["response/len_mean/image", "response/len_mean/text"]
