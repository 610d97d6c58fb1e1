"""FSDP2-sharded trainer group (``cluster.sharding=fsdp``) against the replicated one, on one machine.

1. **Gradient.** :func:`scale.gradient_check` with ``cluster.sharding=fsdp``: one quickstart-shaped
   mini-batch (128 sequences) on the quickstart-size built-in model (untrained), the gradient
   summed over ``--ranks`` FSDP ranks against one process (relative L2; goal < 1e-5 in float32,
   with the single process's own micro-batch-split noise beside it).
2. **Memory.** A Llama built from config (hidden ``--hidden``, ``--layers`` layers, the built-in
   384-token vocabulary: ~113M parameters at 768 x 12) in a trainer group of 1 rank, 2 replicated
   ranks and 2 FSDP ranks: each rank's training state after one gradient and one fresh AdamW step
   (parameters + gradients + AdamW moments, local shards under FSDP) and its resident memory (now
   and peak; every rank loads the full checkpoint before sharding, so the peak holds it once).
   Goal: the FSDP rank's state <= 0.55x the single process's.
3. **Update time.** One ``iteration_update`` (``--seqs`` sequences of ``--tokens`` tokens, one
   mini-batch, log pi_i given) of the same model, replicated vs FSDP at 2 ranks (the faster of two).
4. **Weight sync.** ``TrainerGroup.sync_to`` into one hf rollout worker and the driver's copy:
   today's full-state sync from rank 0 against the layer-by-layer gather from the shards.
5. **Checkpoint write.** The FSDP ranks' sharded checkpoint (``TrainerGroup.save_shards``: DCP, one
   file per rank, fsynced) against the Hugging Face export the driver writes from its copy
   (``save_model``), both into a fresh folder (the faster of two); a sharded run's checkpoint writes both.

All ranks share this machine's cores (``--cpus-per-worker`` each), so times show overheads, not
speed-ups.

    python bench/fsdp.py [--ranks 2] [--hidden 768] [--layers 12] [--seqs 8] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scale import gradient_check

MB = 1 << 20


def build_model(out: Path, hidden: int, layers: int) -> Path:
    from longrl.models.tiny import TinyModelConfig, build_tiny_model, task_corpus

    heads = max(1, hidden // 64)
    return build_tiny_model(out, TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads,
                                                 intermediate_size=4 * hidden), task_corpus(2000))


def batch(n: int, tokens: int, vocab: int):
    """``n`` sequences of ``tokens`` tokens (a quarter prompt), advantages of both signs, log pi_i ~ uniform."""
    from longrl.train.batch import Seq

    rng = random.Random(0)
    seqs = []
    for i in range(n):
        prompt = tokens // 4
        ids = [rng.randrange(4, vocab) for _ in range(tokens)]
        seqs.append(Seq(ids=ids, loss_start=prompt, advantage=rng.uniform(-1, 1), index=i,
                        ref_logp=[-6.0] * (tokens - prompt)))
    return seqs, {s.index: [0] * (len(s.ids) - s.loss_start) for s in seqs}


def write_seconds(write, folder: Path) -> float:
    """The faster of two ``write(folder)`` calls, each into a fresh folder."""
    times = []
    for i in range(2):
        t0 = time.perf_counter()
        write(folder / str(i))
        times.append(time.perf_counter() - t0)
    return min(times)


def group_figures(model_dir: Path, ranks: int, sharding: str, cpus: float, seqs, versions, scratch: Path) -> dict:
    """Per-rank state and memory, update time, weight-sync time and checkpoint-write time of one trainer group."""
    from longrl.config import load_config
    from longrl.distributed.ray_cluster import RayCluster
    from longrl.models.loading import load_model, save_model

    cfg = load_config(None, ["threads=1", "rl.mini_batches=1", "rl.micro_batch_tokens=2048",
                             "cluster.backend=ray", f"cluster.trainer_workers={ranks}", "cluster.rollout_workers=1",
                             f"cluster.cpus_per_worker={cpus}", f"cluster.sharding={sharding}"])
    cluster = RayCluster(cfg)
    try:
        group = cluster.trainer_group(model_dir)
        rollout = cluster.rollout_group(model_dir)
        ref = cluster.ray.put(seqs)
        foot = group.get([a.footprint.remote(ref) for a in group.actors])
        update = []
        for _ in range(2):
            t0 = time.perf_counter()
            group.update(seqs, versions, 0, False)
            update.append(time.perf_counter() - t0)
        driver, tok = load_model(model_dir)
        sync = []
        for _ in range(2):
            t0 = time.perf_counter()
            group.sync_to(rollout, driver)
            sync.append(time.perf_counter() - t0)
        writes = {}
        if group.sharded:
            writes = {"shards_s": write_seconds(group.save_shards, scratch / "sharded"),
                      "export_s": write_seconds(lambda d: save_model(driver, tok, d), scratch / "hf")}
    finally:
        cluster.close()
    worst = max(foot, key=lambda f: f["params"] + f["grads"] + f["optimizer"])
    return {"state": worst["params"] + worst["grads"] + worst["optimizer"], **worst,
            "params_n": sum(p.numel() for p in driver.parameters()), "update_s": min(update), "sync_s": min(sync),
            **writes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--cpus-per-worker", type=float, default=0.5)
    ap.add_argument("--skip-gradient", action="store_true")
    args = ap.parse_args()
    from longrl.models.loading import quiet_transformers
    from longrl.models.tiny import TinyModelConfig

    quiet_transformers()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_gradient:
            small = build_model(Path(tmp) / "quickstart", TinyModelConfig.hidden_size, TinyModelConfig.num_layers)
            print(f"| dtype | sequences | tokens | {args.ranks} FSDP ranks vs 1 process (rel. L2) "
                  "| 1 process, other micro-batch split | 1 process s | FSDP s |")
            print("|---|---|---|---|---|---|---|")
            for dtype in ("float64", "float32"):
                g = gradient_check(args.ranks, small, args.cpus_per_worker, dtype, ("cluster.sharding=fsdp",))
                print(f"| {dtype} | {g['sequences']} | {g['tokens']} | {g['rel_err']:.1e} | {g['floor']:.1e} | "
                      f"{g['single_s']:.2f} | {g['ray_s']:.2f} |")
        big = build_model(Path(tmp) / "big", args.hidden, args.layers)
        seqs, versions = batch(args.seqs, args.tokens, json.loads((big / "config.json").read_text())["vocab_size"])
        rows = [("1 rank", 1, "replicate"), (f"{args.ranks} ranks replicate", args.ranks, "replicate"),
                (f"{args.ranks} ranks fsdp", args.ranks, "fsdp")]
        figs = {name: group_figures(big, n, mode, args.cpus_per_worker, seqs, versions, Path(tmp))
                for name, n, mode in rows}
    one = figs["1 rank"]
    print(f"\nmodel: hidden {args.hidden}, {args.layers} layers, {one['params_n'] / 1e6:.1f}M parameters; "
          f"update batch {args.seqs} x {args.tokens} tokens")
    print("| trainer group | params MiB/rank | grads MiB/rank | AdamW MiB/rank | state MiB/rank | state vs 1 rank "
          "| RSS MiB/rank | peak RSS MiB/rank | update s | weight sync s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, f in figs.items():
        print(f"| {name} | {f['params'] / MB:.0f} | {f['grads'] / MB:.0f} | {f['optimizer'] / MB:.0f} | "
              f"{f['state'] / MB:.0f} | {f['state'] / one['state']:.2f}x | {f['rss'] / MB:.0f} | "
              f"{f['peak_rss'] / MB:.0f} | {f['update_s']:.2f} | {f['sync_s']:.2f} |")
    fsdp = figs[f"{args.ranks} ranks fsdp"]
    print(f"\ncheckpoint of {one['params_n'] * 4 / MB:.0f} MiB of fp32 weights: sharded ({args.ranks} ranks, DCP) "
          f"{fsdp['shards_s']:.2f} s, Hugging Face export (driver) {fsdp['export_s']:.2f} s")


if __name__ == "__main__":
    main()
