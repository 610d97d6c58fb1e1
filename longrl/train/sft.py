"""Supervised long-CoT warm-up (k1.5 §2.2): loss on response tokens only, length-bucketed batches."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from longrl.config import SFTConfig
from longrl.errors import UserError
from longrl.models.loading import end_of_turn_ids
from longrl.models.vision import LazyPixels, encode_prompt_mm
from longrl.models.precision import autocast_dtype, compute_context
from longrl.train.batch import Seq, micro_batch_budget, micro_batches, model_device, token_logprobs, trainable
from longrl.types import Prompt


def encode_examples(tokenizer, examples: Sequence[tuple], max_len: int,
                    chat_template: bool = False, source: str = "data", processor=None) -> list[Seq]:
    """(prompt, response) pairs -> sequences ``prompt + response + end`` with the loss on the response.

    The prompt is encoded as rollouts encode it (:func:`encode_prompt_mm`: the chat template, or the
    tokenizer's BOS; an example ``(prompt, response, images)`` gets the processor-expanded image
    tokens and its pixel inputs, ``Seq.mm``); the response without special tokens, then the
    end-of-turn token generation stops at (:func:`end_of_turn_ids`: the template's, e.g.
    ``<|im_end|>``, else EOS). ``processor`` is a vision-language model's, needed for images.
    """
    out = []
    end = end_of_turn_ids(tokenizer, chat_template)
    for i, (prompt, response, *images) in enumerate(examples):
        text, messages = (prompt, None) if isinstance(prompt, str) else ("", list(prompt))
        enc = encode_prompt_mm(tokenizer, processor, Prompt(id=f"{source}: example {i + 1}", text=text, reference=None,
                                                            task="", messages=messages,
                                                            images=(images[0] if images else None) or None),
                               chat_template)
        p = enc.ids
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + end
        if len(p) + len(r) > max_len:
            raise UserError(f"{source}: example {i + 1} is {len(p) + len(r)} tokens, longer than the "
                            f"model's context of {max_len}")
        # pixel inputs are recomputed per step from the image bytes: a warm-up's tensors would not fit
        mm = LazyPixels(processor, f"{source}: example {i + 1}", images[0], enc.mm) if enc.mm else None
        out.append(Seq(ids=p + r, loss_start=len(p), index=i, mm=mm))
    return out


def _step_batches(seqs: list[Seq], batch_tokens: int, rng: random.Random) -> list[list[Seq]]:
    """Optimizer steps of about ``batch_tokens`` tokens each, from length-sorted shuffled chunks."""
    pool = list(seqs)
    rng.shuffle(pool)
    # Sort within windows of ~50 steps so each step holds similar lengths (little padding) while
    # the order of steps stays random.
    window = max(1, 50 * batch_tokens // max(1, sum(len(s.ids) for s in pool) // max(1, len(pool))))
    steps: list[list[Seq]] = []
    for w in range(0, len(pool), window):
        chunk = sorted(pool[w : w + window], key=lambda s: len(s.ids))
        cur: list[Seq] = []
        for s in chunk:
            if cur and len(s.ids) * (len(cur) + 1) > batch_tokens:
                steps.append(cur)
                cur = []
            cur.append(s)
        if cur:
            steps.append(cur)
    rng.shuffle(steps)
    return steps


def run_sft(model, tokenizer, seqs: list[Seq], cfg: SFTConfig, seed: int = 0,
            progress: bool = True, dtype: str = "float32") -> dict[str, float]:
    """Train ``model`` in place; returns the final smoothed loss and throughput. ``dtype`` is the
    compute dtype (``model.dtype``): bfloat16 autocasts over the model's fp32 weights."""
    import time

    rng = random.Random(seed)
    epochs = math.ceil(cfg.epochs)
    plan = [b for _ in range(epochs) for b in _step_batches(seqs, cfg.batch_tokens, rng)]
    plan = plan[: max(1, round(len(plan) * cfg.epochs / epochs))]
    opt = torch.optim.AdamW(trainable(model), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    warm = max(1, len(plan) // 33)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / len(plan)))))
    model.train()
    dev = model_device(model)
    # on a CPU a step's sequences go through in cache-sized parts; on a GPU as one micro-batch
    micro = min(cfg.batch_tokens, micro_batch_budget(None, dev)) if dev.type == "cpu" else cfg.batch_tokens
    ema, tokens, t0 = None, 0, time.time()
    bar = tqdm(plan, desc="sft", unit="step", disable=not progress, dynamic_ncols=True)
    for step_seqs in bar:
        batches = micro_batches(step_seqs, micro, tokenizer.pad_token_id, dev)
        denom = sum(float(b.loss_mask.sum()) for b in batches)
        total = 0.0
        for b in batches:
            with compute_context(autocast_dtype(dtype), dev):
                loss = -token_logprobs(model, b).sum() / denom
            loss.backward()
            total += loss.item()
            tokens += b.num_tokens
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema = total if ema is None else 0.98 * ema + 0.02 * total
        bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{tokens / (time.time() - t0):.0f}")
    bar.close()
    return {"sft/loss": float(ema or 0.0), "sft/steps": len(plan), "sft/tokens_per_s": tokens / (time.time() - t0)}
