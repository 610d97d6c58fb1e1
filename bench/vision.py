"""Vision throughput on this machine: images/s through the built-in tiny VLM's vision tower and
projector, and rollout tokens/s of the hf engine with image prompts against text prompts of the same
token length (the same work for the language model; the difference is the vision tower and the
pixel inputs), side by side in one run, alternated, median of the repeats.

    python bench/vision.py [--model DIR] [--prompts 64] [--k 4] [--new-tokens 96] [--repeats 3]

Without ``--model`` a tiny VLM is built from the default config (random weights: the throughput does
not depend on them). No token stops a sample, so both sides decode exactly ``--new-tokens`` per sample.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def main() -> None:
    from longrl.models.loading import load_model
    from longrl.models.tiny import TinyModelConfig, TinyVLMConfig
    from longrl.models.vision import build_tiny_vlm, encode_prompt_mm, load_processor
    from longrl.rollout.hf import HFEngine
    from longrl.tasks import render
    from longrl.types import GenRequest, SamplingParams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a vision-language model folder (default: build the tiny VLM)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--k", type=int, default=4, help="samples per prompt")
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or build_tiny_vlm(tmp, TinyVLMConfig(reading_steps=0), TinyModelConfig(),
                                            [e[0] + e[1] for e in render.sft_examples(0, 500)])
        model, tok = load_model(path)
        processor = load_processor(path)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    tower = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" in n or "projector" in n)
    print(f"model: {n_params / 1e6:.2f}M parameters ({tower / 1e6:.2f}M vision tower + projector), "
          f"{torch.get_num_threads()} threads")

    prompts = render.heldout_prompts(50)[: args.prompts]
    encoded = [encode_prompt_mm(tok, processor, p) for p in prompts]
    pixels = torch.cat([e.mm["pixel_values"] for e in encoded])
    image_token = model.config.image_token_id
    filler = tok("the numbers", add_special_tokens=False)["input_ids"]
    # the same prompts with each image token replaced by text tokens: the same length, no pixels
    text_ids = [[filler[i % len(filler)] if t == image_token else t for i, t in enumerate(e.ids)] for e in encoded]
    engine = HFEngine(model, [], tok.pad_token_id)  # no stop token: every sample decodes --new-tokens, both sides
    params = SamplingParams(temperature=1.0)

    def tower_pass(batch: int) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(pixels), batch):
                model.get_image_features(pixel_values=pixels[i : i + batch])
        return len(pixels) / (time.perf_counter() - t0)

    def rollout(images: bool) -> float:
        reqs = [GenRequest(e.ids if images else ids, args.new_tokens, seed=1000 * i + j, mm=e.mm if images else None)
                for i, (e, ids) in enumerate(zip(encoded, text_ids)) for j in range(args.k)]
        t0 = time.perf_counter()
        out = engine.generate(reqs, params)
        return sum(len(r.token_ids) for r in out) / (time.perf_counter() - t0)

    tower_pass(16)  # warm-up
    rollout(True)
    rows = {"tower16": [], "tower64": [], "image": [], "text": []}
    for _ in range(args.repeats):
        rows["tower16"].append(tower_pass(16))
        rows["tower64"].append(tower_pass(64))
        rows["image"].append(rollout(True))
        rows["text"].append(rollout(False))
    med = {k: statistics.median(v) for k, v in rows.items()}
    n_img = sum(1 for t in encoded[0].ids if t == image_token)
    print(f"prompt: {len(encoded[0].ids)} tokens ({n_img} image tokens); {args.prompts} prompts x {args.k} samples "
          f"x {args.new_tokens} new tokens; median of {args.repeats}")
    print(f"vision tower + projector: {med['tower16']:.0f} images/s (batches of 16), "
          f"{med['tower64']:.0f} images/s (batches of 64); 16 images in {16 / med['tower16'] * 1000:.0f} ms")
    print(f"rollout: image prompts {med['image']:.0f} tokens/s, text prompts of the same length "
          f"{med['text']:.0f} tokens/s, ratio {med['image'] / med['text']:.2f}")


if __name__ == "__main__":
    main()
