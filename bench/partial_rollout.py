"""Partial rollouts on a heavy-tailed workload: useful tokens per second, with and without.

Workload: 16 prompts x 8 samples in flight (``--groups``), response lengths drawn per sample from a heavy-tailed
mix — 90% uniform in [m/2, 3m/2], 10% uniform in [8m, 12m] (m = the median target, default 32) —
so about one response in ten is at least 8x the median. Generation is real: the ``hf`` engine
decodes every token with a random-init Llama (the quickstart's size by default, longrl's tokenizer) and EOS
never ends a sample; each sample stops at its drawn length, which plays the part of its EOS.

Both sides run the trainer's own :class:`~longrl.train.partial.ReplayBuffer` scheduling, one after
the other in the same process, for the same number of generated tokens:

- without partial rollouts every iteration starts 16 new groups and waits for its longest sample;
- with them every unfinished sample gets at most ``--budget`` tokens per iteration, unfinished ones
  are continued next iteration, and new groups fill the free places.

"Useful" tokens are those of groups released for training (all k samples finished) — what an
update can consume. Tokens still in the buffer when the run stops do not count. Only the rollout
phase is timed: the update costs the same per trained token either way.

    python bench/partial_rollout.py [--tokens 60000] [--budget 64] [--median 32] [--groups 16]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from longrl.train.partial import ReplayBuffer


class ForcedLengthBuffer(ReplayBuffer):
    """The trainer's buffer, with each sample's length cap drawn from the workload's distribution."""

    def __init__(self, *args, median: int, **kw):
        super().__init__(*args, **kw)
        self.median = median

    def cap(self, t) -> int:
        rng = random.Random(t.seed)
        m = self.median
        if rng.random() < 0.1:
            return rng.randint(8 * m, 12 * m)
        return rng.randint(m // 2, 3 * m // 2)


def build_model(out: Path, hidden: int, layers: int) -> Path:
    from longrl.models.tiny import TinyModelConfig, build_tiny_model, task_corpus

    cfg = TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=4, intermediate_size=4 * hidden,
                          max_positions=512)
    return build_tiny_model(out, cfg, task_corpus(2000))


def run(engine, tok, prompts, budget: int | None, median: int, tokens: int, groups: int = 16, k: int = 8) -> dict:
    from longrl.models.loading import encode_prompt
    from longrl.types import SamplingParams

    buf = ForcedLengthBuffer(k, 12 * median, budget, median=median)
    params = SamplingParams(temperature=1.0)
    encoded: dict[str, list[int]] = {}

    def encode(p):
        return encoded.setdefault(p.id, encode_prompt(tok, p.text))

    generated = useful = it = 0
    times, lengths = [], []
    next_prompt = 0
    while generated < tokens:
        n = buf.new_group_slots(groups * k)
        batch = [prompts[(next_prompt + i) % len(prompts)] for i in range(n)]
        next_prompt += n
        buf.start(batch, it, encode, lambda g, j, it=it: random.Random(f"{it}-{g}-{j}").getrandbits(62))
        trajs, reqs = buf.requests()
        t0 = time.perf_counter()
        results = engine.generate(reqs, params)
        times.append(time.perf_counter() - t0)
        for t, res in zip(trajs, results):
            buf.extend(t, res, it)
            generated += len(res.token_ids)
        for g in buf.release():
            useful += sum(t.num_tokens for t in g.trajs)
            lengths += [t.num_tokens for t in g.trajs]
        it += 1
    wall = sum(times)
    lengths.sort()
    return {"iterations": it, "generated": generated, "useful": useful, "wall_s": wall,
            "useful_tok_s": useful / wall, "generated_tok_s": generated / wall,
            "iter_s_mean": statistics.mean(times), "iter_s_std": statistics.pstdev(times),
            "iter_s_max": max(times), "median_len": lengths[len(lengths) // 2] if lengths else 0,
            "long_share": sum(x >= 8 * median for x in lengths) / max(len(lengths), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=60000, help="generated tokens per side")
    ap.add_argument("--budget", type=int, default=64, help="partial rollouts: tokens per sample per iteration")
    ap.add_argument("--median", type=int, default=32, help="median target response length")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128, help="model width (default: the quickstart model's)")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--groups", type=int, default=16, help="prompt groups in flight (x8 samples each)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from longrl.models import load_model
    from longrl.rollout.hf import HFEngine
    from longrl.tasks import countdown

    with tempfile.TemporaryDirectory() as d:
        model, tok = load_model(build_model(Path(d), args.hidden, args.layers))
    engine = HFEngine(model, [], tok.pad_token_id)  # no EOS: each sample ends at its drawn length
    prompts = list(itertools.islice(countdown.train_prompts(seed=0), 2000))
    run(engine, tok, prompts, args.budget, args.median, 4000, args.groups)  # warm-up (allocator, kernels)
    base = run(engine, tok, prompts, None, args.median, args.tokens, args.groups)
    part = run(engine, tok, prompts, args.budget, args.median, args.tokens, args.groups)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: Llama hidden {args.hidden} x {args.layers} layers ({params / 1e6:.2f}M parameters), fp32, "
          f"{args.threads} threads")
    print(f"workload: {args.groups} prompts x 8 samples in flight, median target {args.median} tokens, 10% at 8-12x; "
          f"budget {args.budget}; {args.tokens} generated tokens per side")
    print(f"{'':22}{'no partial':>14}{'partial':>14}")
    for key, fmt in [("iterations", "{:.0f}"), ("generated", "{:.0f}"), ("useful", "{:.0f}"),
                     ("wall_s", "{:.1f}"), ("generated_tok_s", "{:.0f}"), ("useful_tok_s", "{:.0f}"),
                     ("iter_s_mean", "{:.2f}"), ("iter_s_std", "{:.2f}"), ("iter_s_max", "{:.2f}"),
                     ("median_len", "{:.0f}"), ("long_share", "{:.3f}")]:
        print(f"{key:22}{fmt.format(base[key]):>14}{fmt.format(part[key]):>14}")
    print(f"useful tokens/s, partial / no partial: {part['useful_tok_s'] / base['useful_tok_s']:.2f}x")
    print(f"iteration time CV (std/mean): {base['iter_s_std'] / base['iter_s_mean']:.2f} vs "
          f"{part['iter_s_std'] / part['iter_s_mean']:.2f}")


if __name__ == "__main__":
    main()
