"""SFT training speed of two checkouts' ``token_logprobs``, side by side on the same model and batches.

Measures what the response-only, chunked logits (longrl/train/batch.py) cost the quickstart's warm-up:
the quickstart's tiny model (hidden 128, 3 layers), 400 built-in traces, micro-batches of 2,048 tokens,
one warm-up step, then 3 timed steps. Run each checkout in its own process, alternated:

    git worktree add /tmp/base b2872ec
    for i in 1 2; do for src in /tmp/base .; do python bench/experiments/sft_logits_speed.py --src $src; done; done
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=".", help="the checkout whose longrl package is timed")
    args = ap.parse_args()
    sys.path.insert(0, args.src)
    import torch

    from longrl.models import load_model
    from longrl.models.tiny import TinyModelConfig, build_tiny_model, task_corpus
    from longrl.tasks import countdown
    from longrl.train.batch import micro_batches, token_logprobs
    from longrl.train.sft import encode_examples

    torch.manual_seed(0)
    d = tempfile.mkdtemp()
    build_tiny_model(d, TinyModelConfig(hidden_size=128, num_layers=3, num_heads=4, intermediate_size=512),
                     task_corpus(2000))
    model, tok = load_model(d)
    seqs = encode_examples(tok, countdown.sft_examples(0, 400, give_up_prob=0.8), 512, False, "traces")
    batches = micro_batches(seqs, 2048, tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        for b in batches:
            (-token_logprobs(model, b).sum() / 1000).backward()
        opt.step()
        opt.zero_grad()

    step()
    t, n = time.perf_counter(), 0
    for _ in range(3):
        step()
        n += sum(b.num_tokens for b in batches)
    print(f"{args.src}: {n / (time.perf_counter() - t):.0f} tokens/s")


if __name__ == "__main__":
    main()
