"""Resume: a run stopped after a checkpoint and resumed matches an uninterrupted run exactly."""

import json

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
    out = str(tmp_path / "runs")
    full = longrl("train", *_sets(["rl.iterations=3"]), "--out", out, "--name", "full", "--quiet", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    part = longrl("train", *_sets(["rl.iterations=2"]), "--out", out, "--name", "part", "--quiet", cwd=tmp_path)
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
