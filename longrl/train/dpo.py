"""DPO training against a frozen reference (used by long2short, k1.5 §2.4).

The reference is the model before training: its sequence log-probs are computed once, before the
first update, for every distinct sequence, so no second copy of the model is kept. Each optimizer
step takes ``batch_pairs`` pairs, runs the distinct sequences among them through the policy in
length-bucketed micro-batches, and minimises :func:`longrl.algo.losses.dpo_loss` divided by the
number of pairs in the step (fixed before the micro-batch loop). A response shared by several
pairs (the positive of a group is in all of them) is run once per step.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from longrl.algo.losses import dpo_loss
from longrl.errors import UserError
from longrl.models.loading import end_of_turn_ids
from longrl.models.vision import Encoded, encode_prompt_mm
from longrl.train.batch import Seq, micro_batches, model_device, token_logprobs, trainable
from longrl.types import Prompt


@dataclass
class DPOConfig:
    beta: float = 0.1  # DPO inverse temperature: scale of the implicit reward β·log(π/π_ref)
    lr: float = 1e-5  # AdamW learning rate, constant after a 10-step linear warm-up
    epochs: float = 1.0  # passes over the pairs
    batch_pairs: int = 16  # pairs per optimizer step
    micro_batch_tokens: int = 8192  # padded tokens per forward/backward (memory only)
    sft_weight: float = 0.0  # α of an NLL term on the chosen response, per token (RPO); 0: plain DPO
    grad_clip: float = 1.0  # max global gradient norm
    weight_decay: float = 0.0

    def validate(self) -> None:
        for name in ("beta", "lr", "epochs", "batch_pairs", "micro_batch_tokens", "grad_clip"):
            if not getattr(self, name) > 0:
                raise UserError(f"dpo {name}={getattr(self, name)}: must be positive")
        if not self.sft_weight >= 0:
            raise UserError(f"dpo sft_weight={self.sft_weight}: must be >= 0")


@dataclass
class PairSet:
    """Distinct sequences and the pairs over them. Built by :func:`encode_pairs`, read by :func:`run_dpo`."""

    seqs: list[Seq]  # prompt + response + end-of-turn, loss on the response; ``index`` = position here
    pairs: list[tuple[int, int]]  # (chosen, rejected) indices into ``seqs``


def encode_pairs(tokenizer, rows: Sequence[tuple], max_len: int, chat_template: bool = False,
                 source: str = "pairs", processor=None) -> PairSet:
    """(prompt, chosen, rejected) or (prompt, chosen, rejected, images) -> distinct sequences encoded
    as SFT encodes them (:func:`longrl.train.sft.encode_examples`).

    The prompt is text or chat messages; ``images`` (encoded files, one ``<image>`` each in the
    prompt) need ``processor``, a vision-language model's. Each distinct prompt is encoded once, so
    every sequence of it (chosen and rejected) carries the same pixel inputs (``Seq.mm``).
    """
    prompts: dict[tuple, Encoded] = {}
    ids: dict[tuple, int] = {}
    seqs: list[Seq] = []
    end = end_of_turn_ids(tokenizer, chat_template)

    def encoded(prompt: str | list[dict[str, str]], images: list[bytes], row: int) -> tuple[tuple, Encoded]:
        key = (prompt if isinstance(prompt, str) else json.dumps(prompt), tuple(images))
        if key not in prompts:
            text, messages = (prompt, None) if isinstance(prompt, str) else ("", list(prompt))
            p = Prompt(id=f"{source}: pair {row + 1}", text=text, reference=None, task="", messages=messages,
                       images=list(images) or None)
            prompts[key] = encode_prompt_mm(tokenizer, processor, p, chat_template)
        return key, prompts[key]

    def seq(prompt: str | list[dict[str, str]], images: list[bytes], response: str, row: int) -> int:
        pkey, p = encoded(prompt, images, row)
        key = (pkey, response)
        if key not in ids:
            r = tokenizer(response, add_special_tokens=False)["input_ids"] + end
            if len(p.ids) + len(r) > max_len:
                raise UserError(f"{source}: pair {row + 1} has a sequence of {len(p.ids) + len(r)} tokens, "
                                f"longer than the model's context of {max_len}")
            ids[key] = len(seqs)
            seqs.append(Seq(ids=p.ids + r, loss_start=len(p.ids), index=len(seqs), mm=p.mm))
        return ids[key]

    pairs = []
    for i, (p, c, r, *images) in enumerate(rows):
        images = list(images[0] or []) if images else []
        pairs.append((seq(p, images, c, i), seq(p, images, r, i)))
    return PairSet(seqs, pairs)


def sequence_logprobs(model, seqs: Sequence[Seq], max_tokens: int, pad_id: int) -> torch.Tensor:
    """log π(y|x) summed over each sequence's loss tokens: ``[len(seqs)]``, in ``seqs`` order.

    Differentiable; wrap in ``torch.no_grad()`` for the reference. Rows are matched back through
    each micro-batch's ``index``, so ``Seq.index`` must be the position in ``seqs``.
    """
    parts, order = [], []
    local = [replace(s, index=i) for i, s in enumerate(seqs)]  # pixel inputs (``mm``) included
    for b in micro_batches(local, max_tokens, pad_id, model_device(model)):
        parts.append(token_logprobs(model, b).sum(-1))
        order.append(b.index)
    flat, idx = torch.cat(parts), torch.cat(order)
    return flat[torch.argsort(idx)]


def run_dpo(model, tokenizer, data: PairSet, cfg: DPOConfig, seed: int = 0,
            progress: bool = True) -> dict[str, float]:
    """Train ``model`` in place on ``data``; returns metrics averaged over the last epoch's steps.

    Each step's metrics are measured on the policy before that step's update (as TRL reports them):
    ``accuracy`` is the share of pairs whose implicit reward prefers the chosen response.
    """
    cfg.validate()
    if not data.pairs:
        raise UserError("no preference pairs to train on")
    pad = tokenizer.pad_token_id
    was_training = model.training
    # Dropout off throughout (as TRL's disable_dropout=True): the policy's log-probs at step 0 then
    # equal the reference's, and the implicit reward β·log(π/π_ref) starts at exactly 0.
    model.eval()
    with torch.no_grad():
        ref = sequence_logprobs(model, data.seqs, cfg.micro_batch_tokens, pad)  # frozen reference, once
    rng = random.Random(f"dpo-{seed}")
    steps_per_epoch = math.ceil(len(data.pairs) / cfg.batch_pairs)
    total_steps = max(1, round(steps_per_epoch * cfg.epochs))
    plan: list[list[tuple[int, int]]] = []
    while len(plan) < total_steps:
        order = list(data.pairs)
        rng.shuffle(order)
        plan += [order[i : i + cfg.batch_pairs] for i in range(0, len(order), cfg.batch_pairs)]
    plan = plan[:total_steps]
    opt = torch.optim.AdamW(trainable(model), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    history: list[dict[str, float]] = []
    tokens, t0 = 0, time.time()
    bar = tqdm(plan, desc="dpo", unit="step", disable=not progress, dynamic_ncols=True)
    try:
        for step_pairs in bar:
            used = sorted({i for pair in step_pairs for i in pair})  # each distinct sequence once
            where = {s: k for k, s in enumerate(used)}
            chosen = torch.tensor([where[c] for c, _ in step_pairs])
            rejected = torch.tensor([where[r] for _, r in step_pairs])
            ref_used = ref[used]
            logp = sequence_logprobs(model, [data.seqs[i] for i in used], cfg.micro_batch_tokens, pad)
            chosen_len = torch.tensor([float(len(data.seqs[i].ids) - data.seqs[i].loss_start) for i in used],
                                      device=logp.device)[chosen]
            loss = dpo_loss(logp[chosen], logp[rejected], ref_used[chosen], ref_used[rejected], cfg.beta,
                            cfg.sft_weight, chosen_len) / len(step_pairs)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += sum(len(data.seqs[i].ids) for i in used)
            with torch.no_grad():
                d = logp.detach() - ref_used
                margin = cfg.beta * (d[chosen] - d[rejected])
                nll = float((-logp.detach()[chosen] / chosen_len).mean())
                history.append({
                    "dpo/loss": float(loss) - cfg.sft_weight * nll,  # the DPO term alone, comparable across α
                    "dpo/nll": nll, "dpo/accuracy": float((margin > 0).float().mean()),
                    "dpo/margin": float(margin.mean()), "dpo/chosen_delta": float(d[chosen].mean()),
                    "dpo/rejected_delta": float(d[rejected].mean()), "dpo/grad_norm": float(norm)})
            bar.set_postfix(loss=f"{history[-1]['dpo/loss']:.3f}", acc=f"{history[-1]['dpo/accuracy']:.2f}")
    finally:
        bar.close()
        model.train(was_training)
    last = history[-min(steps_per_epoch, len(history)):]  # the last epoch's steps, as seen before each step
    stats = {k: sum(h[k] for h in last) / len(last) for k in last[0]}
    return stats | {"dpo/steps": len(plan), "dpo/pairs": len(data.pairs),
                    "dpo/tokens_per_s": tokens / max(time.time() - t0, 1e-9)}
