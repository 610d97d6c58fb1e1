"""How fast the built-in tiny VLM learns to read the drawn countdown problems, and whether a model reads them.

    python bench/experiments/vision_reading.py learn [--steps 800] [--drawing bold|thin] [--reading-steps N] [--freeze]
    python bench/experiments/vision_reading.py read --model DIR

``learn`` builds a fresh tiny VLM (default config, a random tower unless ``--reading-steps``) and
trains it on the transcription line alone ("I read the numbers 3 5 7 and the target 15.") of 4,000
drawn training problems, 32 per step, then prints every ``--every`` steps (200) the teacher-forced
share of held-out digits (60 problems) it predicts right.
``--drawing thin`` draws the numbers as generator version 1 did (thin digits placed freely), for the
comparison in docs/benchmarks.md (Vision); ``bold`` is the task's own drawing. ``--reading-steps N``
pretrains the tower first (:func:`longrl.models.vision.pretrain_tower`, what the built-in VLM's build
does), ``--freeze`` keeps it fixed while the language model learns (``model.freeze_vision_tower``).

``read`` asks a model (a warm or RL checkpoint) for greedy transcriptions of 60 held-out drawn
problems and counts those with every number, and those with the target, read right; it also prints
how much the projector's output varies across images (a tower whose features collapsed to a
constant varies by a tiny fraction of their size).
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time

import torch


def thin_drawing(numbers, target) -> bytes:
    """Generator version 1's drawing: thin digits of size 26, centred at x = 20, 48, 76."""
    from longrl.tasks import render

    img, draw = render.canvas()
    for i, n in enumerate(numbers):
        draw.text((20 + 28 * i, 26), str(n), fill=render.INK, font=render.font(26), anchor="mm")
    draw.line([(8, 48), (render.IMAGE_SIZE - 8, 48)], fill=render.INK, width=2)
    draw.text((render.IMAGE_SIZE / 2, 72), str(target), fill=render.INK, font=render.font(30), anchor="mm")
    return render.png(img)


def learn(args) -> None:
    from longrl.models.loading import load_model
    from longrl.models.tiny import TinyModelConfig, TinyVLMConfig
    from longrl.models.vision import build_tiny_vlm, freeze_vision_tower, load_processor
    from longrl.tasks import countdown, render
    from longrl.train.batch import micro_batches, token_logprobs, trainable
    from longrl.train.sft import encode_examples

    draw = thin_drawing if args.drawing == "thin" else render.draw_countdown
    torch.manual_seed(0)

    def rows(prompts):
        return [(render.PROMPT_TEXT, render.transcription(p.reference["numbers"], p.reference["target"]),
                 [draw(p.reference["numbers"], p.reference["target"])]) for p in prompts]

    stream = countdown.train_prompts(1)
    train = rows([next(stream) for _ in range(4000)])
    held = rows(countdown.heldout_prompts(20))
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_vlm(tmp, TinyVLMConfig(reading_steps=args.reading_steps), TinyModelConfig(),
                              [e[0] + e[1] for e in render.sft_examples(0, 500)])
        model, tok = load_model(path)
        processor = load_processor(path)
    if args.freeze:
        freeze_vision_tower(model)
    seqs = encode_examples(tok, train, 512, processor=processor)
    held_seqs = encode_examples(tok, held, 512, processor=processor)
    digit = torch.tensor([tok.decode([t]).strip().isdigit() for t in range(len(tok))])
    opt = torch.optim.AdamW(trainable(model), lr=args.lr)
    rng, t0 = random.Random(0), time.time()
    for step in range(1, args.steps + 1):
        b = micro_batches(rng.sample(seqs, 32), 1 << 20, tok.pad_token_id)[0]
        loss = -(token_logprobs(model, b).sum() / b.loss_mask.sum())
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % args.every == 0:
            model.eval()
            with torch.no_grad():
                hb = micro_batches(held_seqs, 1 << 20, tok.pad_token_id)[0]
                logits = model(input_ids=hb.input_ids, attention_mask=hb.attention_mask, **hb.mm).logits[:, :-1]
                target = hb.input_ids[:, 1:]
                sel = hb.loss_mask.bool() & digit[target]
                acc = (logits.argmax(-1)[sel] == target[sel]).float().mean().item()
            model.train()
            print(f"{args.drawing} reading_steps={args.reading_steps} freeze={args.freeze} step {step}: loss {loss.item():.3f}, held-out digits right {acc:.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)


def read(args) -> None:
    from longrl.models.loading import load_model, stop_token_ids
    from longrl.models.vision import encode_prompt_mm, load_processor
    from longrl.rollout.hf import HFEngine
    from longrl.tasks import render
    from longrl.types import GenRequest, SamplingParams

    model, tok = load_model(args.model)
    processor = load_processor(args.model)
    model.eval()
    prompts = render.heldout_prompts(20)
    encoded = [encode_prompt_mm(tok, processor, p) for p in prompts]
    engine = HFEngine(model, stop_token_ids(tok, args.model), tok.pad_token_id)
    results = engine.generate([GenRequest(e.ids, 40, mm=e.mm) for e in encoded], SamplingParams(temperature=0))
    numbers = target = 0
    for p, r in zip(prompts, results):
        m = re.match(r"I read the numbers ([\d ]+) and the target (\d+)", tok.decode(r.token_ids, skip_special_tokens=True))
        if m:
            numbers += [int(x) for x in m.group(1).split()] == p.reference["numbers"]
            target += int(m.group(2)) == p.reference["target"]
    print(f"{len(prompts)} held-out drawings: all numbers read right {numbers}, target read right {target}")
    with torch.no_grad():
        feats = model.model.multi_modal_projector(
            model.model.vision_tower(torch.cat([e.mm["pixel_values"] for e in encoded[:8]]),
                                     output_hidden_states=True).hidden_states[-1][:, 1:])
    print(f"projector output: std across images {feats.std(0).mean().item():.4g}, overall {feats.std().item():.4g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("learn")
    a.add_argument("--steps", type=int, default=800)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--drawing", choices=("bold", "thin"), default="bold")
    a.add_argument("--reading-steps", type=int, default=0,
                   help="steps of tower pretraining before (TinyVLMConfig.reading_steps; 0: a random tower)")
    a.add_argument("--freeze", action="store_true", help="freeze the vision tower (model.freeze_vision_tower)")
    a.add_argument("--every", type=int, default=200, help="evaluate every this many steps")
    r = sub.add_parser("read")
    r.add_argument("--model", required=True)
    args = ap.parse_args()
    learn(args) if args.what == "learn" else read(args)


if __name__ == "__main__":
    main()
