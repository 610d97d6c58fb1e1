"""Sharded checkpoints of a ``cluster.sharding=fsdp`` run: atomic with the rest, and end to end through the CLI.

One 2-rank FSDP run on a local Ray instance is SIGKILLed in a trainer rank after its first checkpoints;
its checkpoint must be intact (shards and Hugging Face export, equal), and resume both into 1 FSDP rank
(from the shards) and into the local backend (from the export).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_cli import _sets, longrl

from longrl.errors import WorkerFailed
from longrl.train import checkpoint as ckpt

FSDP = ["cluster.backend=ray", "cluster.trainer_workers=2", "cluster.sharding=fsdp", "cluster.num_cpus=4",
        "cluster.cpus_per_worker=0.5"]


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (Ray's raylet and its workers are the driver's), not other runs' workers."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _trainer_ranks(pid: int) -> list[int]:
    ranks = []
    for p in _descendants(pid):
        try:
            if b"ray::TrainerWorker" in Path(f"/proc/{p}/cmdline").read_bytes():
                ranks.append(p)
        except OSError:
            continue
    return ranks


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def _from_shards(ckpt: Path) -> dict[str, torch.Tensor]:
    """The trainer ranks' weights as their shards hold them, assembled in this process (no process group)."""
    from transformers import AutoModelForCausalLM

    from longrl.distributed.fsdp import load_shards

    model = AutoModelForCausalLM.from_pretrained(ckpt)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # whatever the export holds, every value now comes from the shards
    load_shards(model, ckpt / "sharded")
    return _params(model)


def _iteration(ckpt_root: Path) -> int:
    return int((ckpt_root / "latest").read_text().strip().split("_")[1])


def test_shards_are_written_inside_the_atomic_save(tiny_model_dir, tmp_path):
    """The shards go into the save's temporary folder: a save whose shard writing fails (a rank died) leaves
    the previous checkpoint as latest and nothing of the new one."""
    from longrl.distributed.fsdp import save_shards
    from longrl.models.loading import load_model

    model, tok = load_model(tiny_model_dir)
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 1, model, tok, {"iteration": 1}, keep=2, shards=lambda d: save_shards(model, d))
    assert ckpt.sharded_weights(root / "iter_1") == root / "iter_1" / "sharded"
    assert ckpt.sharded_weights(tiny_model_dir) is None  # a plain model folder

    def rank_dies(folder):
        save_shards(model, folder)
        raise WorkerFailed("trainer worker 1 on node 127.0.0.1 failed: the worker died")

    with pytest.raises(WorkerFailed):
        ckpt.save_checkpoint(root, 2, model, tok, {"iteration": 2}, keep=2, shards=rank_dies)
    assert ckpt.latest_checkpoint(root).name == "iter_1"
    assert sorted(p.name for p in root.iterdir()) == ["iter_1", "latest"]


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A 2-rank FSDP run, one trainer rank SIGKILLed once a checkpoint exists: (run dir, exit code, stderr)."""
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')
    if ray.is_initialized():
        ray.shutdown()  # the run starts its own local instance in its own process
    tmp = tmp_path_factory.mktemp("fsdp_ckpt")
    cmd = [sys.executable, "-m", "longrl.cli", "train", *_sets(["rl.iterations=30", *FSDP]),
           "--out", str(tmp / "runs"), "--name", "r", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpts = tmp / "runs" / "r" / "checkpoints"
    deadline = time.time() + 300
    while not (ckpts / "latest").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    ranks = _trainer_ranks(proc.pid)
    assert len(ranks) == 2, f"trainer ranks under the run: {ranks}"
    os.kill(max(ranks), signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    return tmp / "runs" / "r", proc.returncode, err


def test_killed_rank_stops_the_run_with_its_sharded_checkpoint_intact(killed):
    """The run stops with one message; every checkpoint left is complete, and its Hugging Face export
    loads with from_pretrained and equals the trainer's weights as the ranks' shards hold them."""
    from transformers import AutoModelForCausalLM

    run, code, err = killed
    assert code == 1, err[-2000:]
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("error: trainer worker")], err[-2000:]
    ckpts = run / "checkpoints"
    assert not list(ckpts.glob(".tmp-iter_*"))  # a save the kill broke is removed whole
    done = sorted(p.name for p in ckpts.glob("iter_*"))
    assert f"iter_{_iteration(ckpts)}" in done
    for name in done:
        ckpt = ckpts / name
        for f in ("config.json", "model.safetensors", "trainer_state.json", "sharded/.metadata",
                  "sharded/__0_0.distcp", "sharded/__1_0.distcp"):
            assert (ckpt / f).is_file(), (name, f)
        export = _params(AutoModelForCausalLM.from_pretrained(ckpt))
        shards = _from_shards(ckpt)
        assert set(export) == set(shards)
        for k, v in shards.items():
            assert torch.equal(export[k], v), (name, k)
    warm = _params(AutoModelForCausalLM.from_pretrained(next((run.parent / "_warm").iterdir())))
    assert max(float((export[k] - warm[k]).abs().max()) for k in warm) > 0  # the updates reached the export


def test_a_two_rank_sharded_checkpoint_resumes_into_one_rank(killed, tmp_path):
    """The trainer loads the shards, not the export: with every weight of the export shifted by 0.05, the
    next checkpoint is the shards' weights moved by at most one iteration's update (AdamW, lr 1e-4 a
    step; none when the untrained model earns no reward)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    run = tmp_path / "r"
    shutil.copytree(killed[0], run)
    ckpts = run / "checkpoints"
    n = _iteration(ckpts)
    before = _from_shards(ckpts / f"iter_{n}")
    export = ckpts / f"iter_{n}" / "model.safetensors"
    save_file({k: v + 0.05 for k, v in load_file(export).items()}, export, metadata={"format": "pt"})
    res = longrl("train", "--resume", str(run), "--set", f"rl.iterations={n + 1}",
                 "--set", "cluster.trainer_workers=1", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [json.loads(x)["iter"] for x in (run / "metrics.jsonl").read_text().splitlines()][-1] == n + 1
    after = ckpts / f"iter_{n + 1}"
    assert sorted(f.name for f in (after / "sharded").iterdir()) == [".metadata", "__0_0.distcp"]  # one rank now
    weights = _params(AutoModelForCausalLM.from_pretrained(after))
    assert weights.keys() == before.keys()
    step = max(float((weights[k] - before[k]).abs().max()) for k in before)
    assert step < 0.01, step  # from the export it would be >= 0.05
    shards = _from_shards(after)
    assert all(torch.equal(weights[k], shards[k]) for k in shards)


def test_a_sharded_checkpoint_resumes_without_sharding_from_its_export(killed, tmp_path):
    """The Hugging Face export is the source for a replicated or local run; cluster.mixed_precision,
    which changes the compute precision, may not change on resume."""
    run = tmp_path / "r"
    shutil.copytree(killed[0], run)
    n = _iteration(run / "checkpoints")
    bad = longrl("train", "--resume", str(run), "--set", "cluster.mixed_precision=true", cwd=tmp_path)
    assert bad.returncode == 2 and "cluster.mixed_precision" in bad.stderr, bad.stderr[-2000:]
    res = longrl("train", "--resume", str(run), "--set", f"rl.iterations={n + 1}", "--set", "cluster.backend=local",
                 "--set", "cluster.sharding=replicate", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    after = run / "checkpoints" / f"iter_{n + 1}"
    assert (after / "model.safetensors").is_file() and not (after / "sharded").exists()
    assert [json.loads(x)["iter"] for x in (run / "metrics.jsonl").read_text().splitlines()][-1] == n + 1
