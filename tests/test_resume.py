"""Resume: a run stopped after a checkpoint and resumed matches an uninterrupted run exactly."""

import json

import pytest
import yaml

from test_cli import _sets, longrl

TIMING = ("time/", "perf/", "eval/time_s")


def _metrics(run):
    return {m["iter"]: m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def _same(a, b):
    keys = {k for k in a if not k.startswith(TIMING)}
    assert keys == {k for k in b if not k.startswith(TIMING)}
    for k in keys:
        assert a[k] == b[k], k


def test_resume_equals_uninterrupted(tmp_path):
    # The run stops early by being 2 iterations long, then is extended: a constant learning rate, since a
    # cosine over rl.iterations (the preset's) would differ between a 2- and a 3-iteration run from the start.
    out = str(tmp_path / "runs")
    full = longrl("train", *_sets(["rl.iterations=3", "rl.lr_final=null"]), "--out", out, "--name", "full",
                  "--quiet", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    part = longrl("train", *_sets(["rl.iterations=2", "rl.lr_final=null"]), "--out", out, "--name", "part",
                  "--quiet", cwd=tmp_path)
    assert part.returncode == 0, part.stderr[-2000:]
    res = longrl("train", "--resume", str(tmp_path / "runs" / "part"), "--set", "rl.iterations=3", "--quiet",
                 cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = _metrics(tmp_path / "runs" / "full"), _metrics(tmp_path / "runs" / "part")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for it in (1, 2):
        _same({k: v for k, v in a[it].items() if not k.startswith("eval/")},
              {k: v for k, v in b[it].items() if not k.startswith("eval/")})
    _same(a[3], b[3])


def test_resume_refuses_conflicts_and_non_runs(tmp_path):
    r = longrl("train", "--resume", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "not a run directory" in r.stderr
    out = str(tmp_path / "runs")
    ok = longrl("train", *_sets(["rl.iterations=1"]), "--out", out, "--name", "r", "--quiet", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = longrl("train", "--resume", str(tmp_path / "runs" / "r"), "--set", "rl.tau=0.5", cwd=tmp_path)
    assert bad.returncode == 2 and "rl.tau" in bad.stderr


def _rollouts(run):
    return [json.loads(x) for x in (run / "rollouts.jsonl").read_text().splitlines()]


def test_sigkill_mid_iteration_then_resume_equals_uninterrupted(tmp_path):
    """SIGKILL at a random instant after the second iteration, resume: same metrics, same prompts."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    out = str(tmp_path / "runs")
    args = [*_sets(["rl.iterations=5"]), "--out", out, "--quiet"]
    full = longrl("train", *args, "--name", "full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    victim = subprocess.Popen([sys.executable, "-m", "longrl.cli", "train", *args, "--name", "killed"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "runs" / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.01)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.3))  # somewhere inside iteration 3 or 4
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    res = longrl("train", "--resume", str(tmp_path / "runs" / "killed"), "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = _metrics(tmp_path / "runs" / "full"), _metrics(tmp_path / "runs" / "killed")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
    for it in a:
        _same(a[it], b[it])
    ra, rb = _rollouts(tmp_path / "runs" / "full"), _rollouts(tmp_path / "runs" / "killed")
    assert [(r["iter"], r["prompt_id"]) for r in ra] == [(r["iter"], r["prompt_id"]) for r in rb]
    assert ra == rb


def test_resume_refuses_a_checkpoint_of_another_architecture(tmp_path):
    out = str(tmp_path / "runs")
    ok = longrl("train", *_sets(["rl.iterations=1"]), "--out", out, "--name", "r", "--quiet", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    config = tmp_path / "runs" / "r" / "config.yaml"  # as if the checkpoint came from another model
    config.write_text(config.read_text().replace("hidden_size: 32", "hidden_size: 48"))
    bad = longrl("train", "--resume", str(tmp_path / "runs" / "r"), "--set", "rl.iterations=2", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert "different model architecture" in bad.stderr and "hidden_size: 32 (checkpoint) vs 48" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_partial_rollouts_resume_exactly_and_lose_no_group(tmp_path):
    """The replay buffer goes into the checkpoint: resumed == uninterrupted, every group accounted for."""
    out = str(tmp_path / "runs")
    partial = ["partial.enabled=true", "partial.budget=5", "rollout.batch_prompts=3", "rl.lr_final=null"]
    full = longrl("train", *_sets([*partial, "rl.iterations=7"]), "--out", out, "--name", "full", "--quiet",
                  cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    part = longrl("train", *_sets([*partial, "rl.iterations=3"]), "--out", out, "--name", "part", "--quiet",
                  cwd=tmp_path)
    assert part.returncode == 0, part.stderr[-2000:]
    assert _metrics(tmp_path / "runs" / "part")[3]["partial/buffer_unfinished"] > 0  # resumes mid-trajectory
    res = longrl("train", "--resume", str(tmp_path / "runs" / "part"), "--set", "rl.iterations=7", "--quiet",
                 cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = _metrics(tmp_path / "runs" / "full"), _metrics(tmp_path / "runs" / "part")
    for it in (1, 2, 3, 4, 5, 6):
        _same({k: v for k, v in a[it].items() if not k.startswith("eval/")},
              {k: v for k, v in b[it].items() if not k.startswith("eval/")})
    _same(a[7], b[7])
    assert _rollouts(tmp_path / "runs" / "full") == _rollouts(tmp_path / "runs" / "part")
    m = a.values()
    assert sum(x["partial/old_policy_token_share"] > 0 for x in m) > 0  # some trained tokens are off-policy
    started, trained = sum(x["train/new_groups"] for x in m), sum(x["train/groups"] for x in m)
    assert started == trained + a[7]["partial/buffer_groups"] + sum(x["partial/dropped_stale"] for x in m)
    assert trained > 0 and {x["stop/budget"] for x in m if "stop/budget" in x} != set()
    cfg = yaml.safe_load((tmp_path / "runs" / "full" / "config.yaml").read_text())
    k, lr = cfg["rollout"]["k"], cfg["rl"]["lr"]
    assert any(x["train/groups"] < 3 for x in m)  # some iterations train less than a full batch ...
    for x in m:  # ... and step with a proportionally smaller learning rate (rl.lr_per_response)
        assert x["lr"] == pytest.approx(lr * x["train/groups"] * k / (3 * k), rel=1e-12)
