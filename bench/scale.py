"""Ray scale-out on one machine: data-parallel gradient check, then iteration time against one process.

1. **Gradient.** One mini-batch of the quickstart's shape (128 sequences of prompt + response,
   advantages and log pi_i set) on the quickstart's model: the gradient summed over a Ray trainer
   group of ``--workers`` gloo workers against the single-process gradient (relative L2 error;
   goal < 1e-5), and the time of each. In float64 the two must agree to rounding; in float32
   the single process itself moves by ~1e-5 when only its micro-batch split changes (summation
   order over thousands of tokens), printed beside it as the noise floor.
2. **Iterations.** The quickstart recipe for ``--iters`` RL iterations from the same warm
   checkpoint, once in one process and once with ``cluster.backend=ray`` (the trainer group, one
   rollout worker, scoring in the driver); the median ``time/iter_s`` of each and their ratio.
   Both runs share the machine's cores: on a 2-core machine the Ray run is expected to be slower
   (its workers split the same two cores and pay for weight transfers); the figure shows that
   overhead, not a speed-up.

    python bench/scale.py [--workers 2] [--iters 4] [--skip-run]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def gradient_check(workers: int, model_dir: Path, cpus: float, dtype: str, sets: tuple[str, ...] = ()) -> dict:
    from longrl.config import load_config
    from longrl.distributed.ray_cluster import RayCluster
    from longrl.models.loading import load_model
    from longrl.train.batch import Seq, micro_batches, token_logprobs
    from longrl.train.update import DataParallel, UpdateStats, batch_gradient

    cfg = load_config("quickstart", ["cluster.backend=ray", f"cluster.trainer_workers={workers}",
                                     f"cluster.cpus_per_worker={cpus}", f"model.dtype={dtype}", *sets])
    model, tok = load_model(model_dir, dtype)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    seqs = []
    for i in range(cfg.rollout.batch_prompts * cfg.rollout.k):
        n_p, n_r = int(torch.randint(20, 40, (1,), generator=g)), int(torch.randint(40, 192, (1,), generator=g))
        ids = torch.randint(4, vocab, (n_p + n_r,), generator=g).tolist()
        seqs.append(Seq(ids=ids, loss_start=n_p, advantage=float(torch.randn((), generator=g)), index=i))
    with torch.no_grad():
        for b in micro_batches(seqs, 8192, tok.pad_token_id):
            logp = token_logprobs(model, b)
            for row, idx in enumerate(b.index.tolist()):
                s = seqs[idx]
                s.ref_logp = (logp[row, s.loss_start - 1 : len(s.ids) - 1] - 0.01).tolist()

    def single(micro_batch_tokens: int) -> tuple[torch.Tensor, float]:
        cfg.rl.micro_batch_tokens = micro_batch_tokens
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        batch_gradient(model, seqs, cfg, tok.pad_token_id, DataParallel(), UpdateStats())
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()]), time.perf_counter() - t0

    single(8192)  # warm-up
    ref, t_single = single(8192)
    floor = single(2048)[0]  # the same gradient with another micro-batch split: the summation-order noise
    cfg.rl.micro_batch_tokens = 8192  # the workers split as the reference did
    cluster = RayCluster(cfg)
    try:
        group = cluster.trainer_group(model_dir)
        group.gradient(seqs)  # warm-up
        t0 = time.perf_counter()
        dist = group.gradient(seqs)
        t_dist = time.perf_counter() - t0
    finally:
        cluster.close()

    def rel(x: torch.Tensor) -> float:
        return float((x.double() - ref.double()).norm() / ref.double().norm())

    return {"rel_err": rel(dist), "floor": rel(floor), "single_s": t_single, "ray_s": t_dist,
            "sequences": len(seqs), "tokens": sum(len(s.ids) for s in seqs)}


def iteration_times(workers: int, iters: int, cpus: float, out: Path, warm: Path) -> dict:
    base = ["--set", f"sft.warm_dir={warm.resolve()}", "--set", f"rl.iterations={iters}", "--set", "eval.every=0", "--set", "data.heldout_per_level=4",
            "--set", "eval.n_samples=1", "--set", "checkpoint.every=1000", "--quiet"]
    result = {}
    for name, extra in [("single", []), ("ray", ["--set", "cluster.backend=ray", "--set",
                                                 f"cluster.trainer_workers={workers}", "--set",
                                                 f"cluster.cpus_per_worker={cpus}"])]:
        cmd = [sys.executable, "-m", "longrl.cli", "train", "quickstart", *base, *extra,
               "--out", str(out), "--name", f"scale_{name}_{int(time.time())}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"{name} run failed:\n{r.stderr[-3000:]}")
        run = max(out.glob(f"scale_{name}_*"), key=os.path.getmtime)
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        result[name] = {"iter_s": statistics.median(m["time/iter_s"] for m in rows[1:] or rows),
                        "update_s": statistics.median(m["time/update_s"] for m in rows[1:] or rows),
                        "sync_s": statistics.median(m["time/weight_sync_s"] for m in rows[1:] or rows),
                        "reward": [round(m["reward/mean"], 4) for m in rows]}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--cpus-per-worker", type=float, default=0.5)
    ap.add_argument("--out", default="runs")
    ap.add_argument("--skip-run", action="store_true", help="only the gradient check")
    args = ap.parse_args()
    from longrl.config import load_config
    from longrl.train.loop import quiet_transformers, warm_model_dir

    quiet_transformers()
    warm = warm_model_dir(load_config("quickstart", [f"out={args.out}"]))
    print("| dtype | sequences | tokens | Ray vs 1 process (rel. L2) | 1 process, other micro-batch split "
          f"| 1 process s | {args.workers} Ray workers s |")
    print("|---|---|---|---|---|---|---|")
    for dtype in ("float64", "float32"):
        g = gradient_check(args.workers, warm, args.cpus_per_worker, dtype)
        print(f"| {dtype} | {g['sequences']} | {g['tokens']} | {g['rel_err']:.1e} | {g['floor']:.1e} | "
              f"{g['single_s']:.2f} | {g['ray_s']:.2f} |")
    if args.skip_run:
        return
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        t = iteration_times(args.workers, args.iters, args.cpus_per_worker, Path(tmp), warm)
    s, r = t["single"], t["ray"]
    print("| run | median iteration s | update s | weight sync s | reward per iteration |")
    print("|---|---|---|---|---|")
    for name, v in t.items():
        print(f"| {name} | {v['iter_s']:.2f} | {v['update_s']:.2f} | {v['sync_s']:.3f} | {v['reward']} |")
    print(f"ray / single iteration time: {r['iter_s'] / s['iter_s']:.2f}x")


if __name__ == "__main__":
    main()
