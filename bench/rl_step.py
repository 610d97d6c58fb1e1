"""One RL iteration at a fixed shape: longrl vs TRL's GRPOTrainer, side by side in one run.

Shape: 16 prompts x 8 samples x 64 new tokens, a ~4.2M-parameter Llama (hidden 256, 4 layers)
with longrl's built-in tokenizer, random init, fp32 on CPU. longrl runs its real trainer step
(sample -> roll out -> score -> baseline -> update -> sync) with one optimizer step; TRL runs
GRPOTrainer (beta = 0, one generation batch = one optimizer step of 128 completions). Both use
the built-in countdown scorer. Also measured in the same run: the CPU's fp32 matmul peak, against
which the update phase is reported (6 x parameters x trained tokens / update time).

    python bench/rl_step.py [--iters 3] [--repeats 3] [--no-trl]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def matmul_peak(threads: int, n: int = 1536, reps: int = 8) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def build_model(out: Path) -> Path:
    from longrl.models.tiny import TinyModelConfig, build_tiny_model, task_corpus

    cfg = TinyModelConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, max_positions=256)
    return build_tiny_model(out, cfg, task_corpus(2000))


def bench_longrl(model_dir: Path, iters: int) -> dict:
    from longrl.config import load_config
    from longrl.models import load_model
    from longrl.rewards.compose import build_router
    from longrl.tasks import countdown
    from longrl.train.loop import make_engine
    from longrl.train.rl import Trainer

    # The same work as TRL's step: every one of the 128 completions in the loss. The quickstart preset
    # leaves responses cut at the cap out of it (rl.mask_truncated), which here trained 1,935 of 8,499
    # tokens; GRPOTrainer's mask_truncated_completions is off by default.
    cfg = load_config(None, ["rollout.batch_prompts=16", "rollout.k=8", "rollout.max_length=64",
                             "rl.mini_batches=1", "rl.epochs=1", "rl.mask_truncated=false"])
    model, tok = load_model(model_dir)
    stream = countdown.train_prompts(0)
    pool = [next(stream) for _ in range(512)]
    trainer = Trainer(cfg, model, tok, make_engine(cfg, model, tok), pool, build_router(cfg.rewards))
    n_params = sum(p.numel() for p in model.parameters())
    rows = []
    for i in range(iters + 1):
        m = trainer.step()
        if i == 0:
            continue  # warm-up iteration
        tokens = m["perf/train_tokens_per_s"] * m["time/update_s"]
        in_loss = sum(trainer.in_loss(t) for t in trainer.trained)
        if in_loss != 128:
            raise SystemExit(f"longrl trained {in_loss} of 128 responses: not the work TRL's step does")
        rows.append({"iter": m["time/iter_s"], "rollout": m["time/rollout_s"], "score": m["time/score_s"],
                     "update": m["time/update_s"], "gen_tokens": m["response/len_mean"] * 128,
                     "train_tokens": tokens, "flops": 6 * n_params * tokens})
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]} | {"params": n_params}


def bench_trl(model_dir: Path, iters: int) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from longrl.tasks import countdown

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    stream = countdown.train_prompts(0)
    prompts = [next(stream) for _ in range(16 * (iters + 1))]
    refs = {p.text: p.reference for p in prompts}
    ds = Dataset.from_list([{"prompt": p.text} for p in prompts])

    def reward(prompts, completions, **kw):
        return [countdown.verify(c, refs[p]["numbers"], refs[p]["target"]).value for p, c in zip(prompts, completions)]

    times: list[float] = []

    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, per_device_train_batch_size=128, num_generations=8,
                          max_completion_length=64, beta=0.0, learning_rate=1e-5, max_steps=iters + 1,
                          logging_steps=1000, save_strategy="no", report_to="none", use_cpu=True,
                          shuffle_dataset=False, temperature=1.0, disable_tqdm=True, bf16=False)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds,
                              processing_class=tok, callbacks=[Timer()])
        trainer.train()
    return {"iter": statistics.median(times[1:])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="longrl/TRL pairs, alternated (the machine is noisy)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-trl", action="store_true")
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    pairs: list[tuple[dict, dict | None, float]] = []
    with tempfile.TemporaryDirectory() as d:
        model_dir = build_model(Path(d) / "m")
        for _ in range(args.repeats):
            peak = matmul_peak(args.threads)
            torch.set_num_threads(args.threads)
            ours = bench_longrl(model_dir, args.iters)
            trl = None if args.no_trl else bench_trl(model_dir, args.iters)
            pairs.append((ours, trl, peak))
    ours, _, _ = pairs[0]
    print(f"model: {ours['params'] / 1e6:.2f}M parameters; shape 16 prompts x 8 samples x <=64 new tokens")
    for n, (ours, trl, peak) in enumerate(pairs, 1):
        upd = ours["flops"] / ours["update"] / 1e9
        print(f"[{n}] longrl iteration: {ours['iter']:.2f} s  (rollout {ours['rollout']:.2f} s, "
              f"score {ours['score']:.3f} s, update {ours['update']:.2f} s; log pi_i comes from the engine: 0 s)")
        print(f"    generated tokens {ours['gen_tokens']:.0f}, trained tokens {ours['train_tokens']:.0f} "
              f"(prompt + response, all 128 responses in the loss, as in TRL's step); "
              f"update {upd:.1f} GFLOP/s = {upd / peak:.0%} of the fp32 matmul peak measured just before "
              f"({peak:.1f} GFLOP/s; 6 x params x tokens)")
        if trl:
            print(f"    TRL GRPOTrainer step: {trl['iter']:.2f} s; ratio longrl / TRL: {ours['iter'] / trl['iter']:.2f}")
    if not args.no_trl:
        ratios = [o["iter"] / t["iter"] for o, t, _ in pairs]
        print(f"ratio longrl / TRL, median of {len(ratios)}: {statistics.median(ratios):.2f} "
              f"(each: {', '.join(f'{r:.2f}' for r in ratios)}; bar: <= 0.75, aim 0.6)")


if __name__ == "__main__":
    main()
