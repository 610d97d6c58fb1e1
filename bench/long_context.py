"""Peak memory of one k1.5 update step at long response lengths, with and without activation checkpointing.

One step = the forward and backward of the mirror-descent loss (``longrl.algo``) on a batch of one
sequence (a 64-token prompt + N response tokens, all response tokens in the loss), in the trainer's
own mode (``policy_forward``: eval mode, fp32). Two ways to get the log-probs:

* chunked: ``longrl.train.batch.token_logprobs``, which sends only the loss positions through the
  LM head, ``LOGIT_CHUNK_ELEMENTS`` logits at a time, each chunk recomputed in the backward;
* naive: ``model(...).logits`` -> ``log_softmax`` -> gather, which holds ``N x vocab`` fp32 logits
  and their log-softmax (and, in the backward, their gradients).

Model: the built-in Llama architecture (``longrl.models.tiny``: hidden 128, 3 layers, 4 heads, MLP
512) with a 32,000-entry vocabulary (untied sizes of a Llama-2 tokenizer; the embedding is tied as
in the tiny model), random weights built from the config, sdpa attention. A single unpadded sequence
takes sdpa's causal flash kernel (transformers passes ``is_causal`` and no mask), whose memory is
O(length) per head, so attention is not what grows here.

Peak memory is measured honestly on the CPU: each configuration runs in a fresh process, which
reads ``getrusage(RUSAGE_SELF).ru_maxrss`` (the kernel's high-water mark of resident memory) once
the model and the batch are built, and again after the step; the table gives the difference. PyTorch's
CPU allocator hands large blocks straight back to the OS, and every tensor here is written, so RSS is
what the step held. A naive configuration whose logits alone would need more than ``--max-gib``
(four ``N x vocab`` fp32 copies: logits, log-softmax, and the gradients of both) is skipped.

    OMP_NUM_THREADS=1 python bench/long_context.py [--tokens 4096 16384 32768] [--max-gib 12] [--chunk-elements N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

PROMPT = 64  # prompt tokens before the response
VOCAB = 32_000


def build(tokens: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from longrl.models.tiny import TinyModelConfig

    tiny = TinyModelConfig()
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
                         num_hidden_layers=tiny.num_layers, num_attention_heads=tiny.num_heads,
                         num_key_value_heads=tiny.num_heads, max_position_embeddings=PROMPT + tokens,
                         rms_norm_eps=1e-5, tie_word_embeddings=True, attn_implementation="sdpa")
    torch.manual_seed(tiny.seed)
    return LlamaForCausalLM(config)


def naive_logprobs(model, batch) -> torch.Tensor:
    """The full-logits path: ``[b, L-1]`` log-probs of the targets, 0 outside the loss mask."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1) * batch.loss_mask


def one(tokens: int, path: str, ckpt: bool, chunk_elements: int) -> dict:
    """Run one configuration in this process; returns its peak memory over the baseline and its time."""
    from longrl.algo import get_algorithm
    from longrl.models.precision import enable_activation_checkpointing
    from longrl.train.batch import Seq, micro_batches, token_logprobs
    from longrl.train.update import policy_forward

    model = build(tokens)
    if ckpt:
        enable_activation_checkpointing(model)
    algo = get_algorithm("mirror_descent")
    g = torch.Generator().manual_seed(0)

    def step(n: int) -> float:
        ids = torch.randint(0, VOCAB, (PROMPT + n,), generator=g).tolist()
        ref = (-5 - torch.rand(n, generator=g)).tolist()
        batch = micro_batches([Seq(ids=ids, loss_start=PROMPT, advantage=1.0, ref_logp=ref)], 1 << 30, 0)[0]
        with policy_forward(model, "float32"):
            logp = token_logprobs(model, batch, chunk_elements=chunk_elements) if path == "chunked" else naive_logprobs(model, batch)
        loss = algo.loss(logp, batch.ref_logp, batch.loss_mask, batch.advantages, tau=0.1, clip_eps=0.2) / n
        loss.backward()
        model.zero_grad(set_to_none=False)  # the gradient buffers stay allocated, as across a training run
        return float(loss)

    step(64)  # one-time costs out of the figure: kernels and thread pools loaded, gradient buffers allocated
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    t0 = time.perf_counter()
    loss = step(tokens)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": (peak - base) / 1024, "seconds": seconds, "loss": loss}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384, 32768], help="response tokens")
    p.add_argument("--max-gib", type=float, default=12.0, help="skip naive runs estimated above this")
    p.add_argument("--chunk-elements", type=int, default=None,
                   help="logits per chunk of the chunked path (default: LOGIT_CHUNK_ELEMENTS, 2^27)")
    p.add_argument("--one", nargs=3, metavar=("TOKENS", "PATH", "CKPT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    from longrl.train.batch import LOGIT_CHUNK_ELEMENTS

    chunk = args.chunk_elements or LOGIT_CHUNK_ELEMENTS
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.one[2] == "on", chunk)))
        return

    print(f"one update step, batch of 1 sequence ({PROMPT}-token prompt), Llama hidden 128 x 3 layers, "
          f"vocab {VOCAB}, fp32, torch threads {torch.get_num_threads()}, logits chunk {chunk} elements")
    print(f"{'tokens':>7} {'log-probs':>9} {'ckpt':>4} {'peak MiB':>9} {'time s':>7}")
    for tokens in args.tokens:
        for path in ("chunked", "naive"):
            need = 4 * tokens * VOCAB * 4 / 2**30
            for ckpt in ("off", "on"):
                if path == "naive" and need > args.max_gib:
                    print(f"{tokens:>7} {path:>9} {ckpt:>4}  skipped: would need ~{need:.1f} GiB")
                    continue
                out = subprocess.run([sys.executable, __file__, "--one", str(tokens), path, ckpt,
                                      "--chunk-elements", str(chunk)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{tokens:>7} {path:>9} {ckpt:>4} {r['peak_mib']:>9.0f} {r['seconds']:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
