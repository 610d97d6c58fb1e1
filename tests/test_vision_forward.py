"""Pixel inputs through the hf engine and the training forward (DESIGN §7b), on tiny random VLMs.

Two architectures built from transformers configs: LLaVA (CLIP vision tower + Llama; 1-D positions)
and Qwen2-VL (M-RoPE: image tokens take (t, h, w) grid positions, so a row's positions are not its
token indices). Image tokens are placed in the ids by hand, as many as the model expects per image.
"""

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

from longrl.models.vision import mm_forward_kwargs, placeholder_token_ids
from longrl.rollout.hf import HFEngine
from longrl.train.batch import Seq, micro_batches, token_logprobs
from longrl.types import GenRequest, SamplingParams

V = 64  # vocabulary; the top ids are the image and vision marker tokens
IMG, PAD, EOS = V - 1, 0, V - 5
TEXT = {"vocab_size": V, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "bos_token_id": 1, "eos_token_id": EOS, "pad_token_id": PAD}


class Llava:
    """16x16 images in 8x8 patches: 4 image tokens each; ``pixel_values [n_img, 3, 16, 16]``."""

    @staticmethod
    def build():
        torch.manual_seed(0)
        return LlavaForConditionalGeneration(LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=16, patch_size=8),
            text_config=LlamaConfig(**TEXT), image_token_index=IMG, vision_feature_layer=-1)).eval()

    @staticmethod
    def image(g: torch.Generator, shape=None) -> tuple[int, dict[str, torch.Tensor]]:
        return 4, {"pixel_values": torch.randn(1, 3, 16, 16, generator=g)}


class Qwen2VL:
    """2x2 patches merged 2x2: a (1, h, w) patch grid gives h*w/4 image tokens; ``pixel_values
    [h*w, 3*2*2*2]`` (temporal patch 2), ``image_grid_thw [[1, h, w]]``. Non-square grids make the
    three M-RoPE axes differ."""

    @staticmethod
    def build():
        torch.manual_seed(0)
        text = {**TEXT, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                            "mrope_section": [1, 1, 2]}}  # head_dim 8: 4 frequencies
        return Qwen2VLForConditionalGeneration(Qwen2VLConfig(
            text_config=text,
            vision_config={"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                           "patch_size": 2, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
            image_token_id=IMG, video_token_id=V - 2, vision_start_token_id=V - 3, vision_end_token_id=V - 4,
        )).eval()

    @staticmethod
    def image(g: torch.Generator, shape=(4, 6)) -> tuple[int, dict[str, torch.Tensor]]:
        h, w = shape
        return h * w // 4, {"pixel_values": torch.randn(h * w, 24, generator=g),
                            "image_grid_thw": torch.tensor([[1, h, w]])}


ARCHS = {"llava": Llava, "qwen2vl": Qwen2VL}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def arch(request):
    a = ARCHS[request.param]
    return a, a.build()


def image_prompt(arch, g: torch.Generator, before: list[int], after: list[int], shapes=((4, 6),)):
    """``before <image>... after`` with each image's tokens expanded, and the prompt's pixel inputs."""
    ids, parts = list(before), []
    for shape in shapes:
        n, mm = arch.image(g, shape)
        ids += [IMG] * n + after
        parts.append(mm)
    return ids, {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def training_logprobs(model, reqs: list[GenRequest], results, temperature: float) -> list[torch.Tensor]:
    """Each request's response log-probs from ``token_logprobs`` on one right-padded batch."""
    seqs = [Seq(r.prompt_ids + g.token_ids, loss_start=len(r.prompt_ids), index=i, mm=r.mm)
            for i, (r, g) in enumerate(zip(reqs, results))]
    (b,) = micro_batches(seqs, 100_000, PAD)
    with torch.no_grad():
        logp = token_logprobs(model, b, temperature)
    out: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    for row, i in enumerate(b.index.tolist()):
        s = seqs[i]
        out[i] = logp[row, s.loss_start - 1 : len(s.ids) - 1]
    return out


def test_engine_logprobs_equal_training_logprobs(arch):
    """Left-padded prefill + decode (rows leaving at different steps, a shared prefill, text-only rows
    beside image rows, two images in one prompt) gives the right-padded training forward's numbers."""
    a, model = arch
    g = torch.Generator().manual_seed(1)
    p1 = image_prompt(a, g, [1, 5, V - 3], [V - 4, 7, 8, 9])
    p2 = image_prompt(a, g, [1, 6, 6, 6, 6, 6, 6, V - 3], [V - 4, 11], shapes=((4, 4), (2, 6)))
    text = [1, 12, 13, 14]
    reqs = [GenRequest(p1[0], 9, seed=0, mm=p1[1]), GenRequest(p1[0], 4, seed=1, mm=p1[1]),
            GenRequest(text, 6, seed=2), GenRequest(p2[0], 7, seed=3, mm=p2[1]),
            GenRequest(text + [15, 16], 3, seed=4)]
    eng = HFEngine(model, [EOS], PAD)
    for temperature in (1.0, 0.7):
        res = eng.generate(reqs, SamplingParams(temperature=temperature))
        assert len({len(r.token_ids) for r in res}) > 2  # rows leave the batch at different steps
        for want, r in zip(training_logprobs(model, reqs, res, temperature), res):
            torch.testing.assert_close(torch.tensor(r.logprobs), want, rtol=0, atol=1e-4)


def test_training_positions_are_the_models_own(arch):
    """``token_logprobs`` on a padded batch equals the model's own unpadded forward, where the model
    builds its positions itself (Qwen2-VL: its M-RoPE index from ``mm_token_type_ids``); the image
    placeholders (never sampled) are left out of the softmax."""
    a, model = arch
    assert placeholder_token_ids(model) == ([V - 2, IMG] if a is Qwen2VL else [IMG])
    g = torch.Generator().manual_seed(2)
    ids, mm = image_prompt(a, g, [1, 5, V - 3], [V - 4, 7, 8, 9, 10, 11])
    start = len(ids) - 6  # the text after the image
    short = Seq([1, 20, 21, 22], loss_start=1, index=1)
    (b,) = micro_batches([Seq(ids, loss_start=start, index=0, mm=mm), short], 100_000, PAD)
    with torch.no_grad():
        got = token_logprobs(model, b)[int((b.index == 0).nonzero()), start - 1 : len(ids) - 1]
        x = torch.tensor([ids])
        logits = model(input_ids=x, **mm_forward_kwargs(model, x, mm)).logits[0, start - 1 : -1].float()
    logits[:, placeholder_token_ids(model)] = float("-inf")
    want = torch.log_softmax(logits, -1).gather(1, x[0, start:, None]).squeeze(1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_the_pixels_matter(arch):
    a, model = arch
    g = torch.Generator().manual_seed(3)
    ids, mm = image_prompt(a, g, [1, 5, V - 3], [V - 4, 7, 8, 9, 10])
    other = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in mm.items()}
    lp = []
    for pixels in (mm, other):
        (b,) = micro_batches([Seq(ids, loss_start=len(ids) - 4, mm=pixels)], 100_000, PAD)
        with torch.no_grad():
            lp.append(token_logprobs(model, b))
    assert (lp[0] - lp[1]).abs().max() > 1e-3


def test_identical_ids_with_other_images_are_not_one_prefill(arch):
    """Two requests with the same ids but different images each get their own context: in one
    batch each gives what it gives alone. Requests sharing one image share a prefill, still exactly."""
    a, model = arch
    g = torch.Generator().manual_seed(4)
    ids, mm = image_prompt(a, g, [1, 5, V - 3], [V - 4, 7])
    other = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in mm.items()}
    same_copy = {k: v.clone() for k, v in mm.items()}
    reqs = [GenRequest(ids, 6, seed=0, mm=mm), GenRequest(ids, 6, seed=0, mm=other),
            GenRequest(ids, 6, seed=0, mm=same_copy)]
    eng = HFEngine(model, [EOS], PAD)
    params = SamplingParams(temperature=1.0)
    together = eng.generate(reqs, params)
    for r, got in zip(reqs, together):
        alone = eng.generate([r], params)[0]
        assert got.token_ids == alone.token_ids
        torch.testing.assert_close(torch.tensor(got.logprobs), torch.tensor(alone.logprobs), rtol=0, atol=1e-5)
    assert together[0].logprobs == together[2].logprobs  # equal pixels: one context
    assert together[0].logprobs != together[1].logprobs


def test_checkpoint_round_trip_then_a_policy_update_step(tmp_path):
    """The saved and reloaded Qwen2-VL keeps its numbers, and one ``policy_update`` step on image
    sequences (rolled out by the hf engine, log π_i recorded by it) runs and moves the weights."""
    from longrl.config import load_config
    from longrl.train.update import policy_update

    model = Qwen2VL.build()
    model.save_pretrained(tmp_path)
    loaded = Qwen2VLForConditionalGeneration.from_pretrained(tmp_path).eval()
    g = torch.Generator().manual_seed(5)
    prompts = [image_prompt(Qwen2VL, g, [1, 5 + i, V - 3], [V - 4, 7], shapes=((4, 4 + 2 * i),)) for i in range(3)]
    reqs = [GenRequest(ids, 5, seed=j, mm=mm) for ids, mm in prompts for j in range(2)]
    res = HFEngine(loaded, [EOS], PAD).generate(reqs, SamplingParams(temperature=1.0))
    for want, r in zip(training_logprobs(model, reqs, res, 1.0), res):
        torch.testing.assert_close(torch.tensor(r.logprobs), want, rtol=0, atol=1e-4)
    seqs = [Seq(r.prompt_ids + g.token_ids, loss_start=len(r.prompt_ids), advantage=1.0 if i % 2 else -1.0,
                ref_logp=g.logprobs, index=i, mm=r.mm) for i, (r, g) in enumerate(zip(reqs, res))]
    cfg = load_config(None, ["rl.lr=1e-3", "rl.mini_batches=1", "rl.micro_batch_tokens=64"])
    vision = loaded.model.visual.blocks[0].mlp.fc1.weight
    before = vision.detach().clone()
    stats = policy_update(loaded, seqs, cfg, iteration=0, pad_id=PAD)
    assert stats.steps == 1 and stats.mismatch_tokens > 0 and stats.mismatch_max < 1e-4
    assert (vision.detach() - before).abs().max() > 0  # the gradient reached the vision tower via the pixels
