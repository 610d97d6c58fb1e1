"""Vision-language models: the built-in tiny VLM, a tiny Qwen2-VL, loading, processors, prompt encoding."""

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from longrl.errors import UserError
from longrl.models.loading import encode_prompt, load_model
from longrl.models.tiny import TinyModelConfig, task_corpus
from longrl.models.vision import (
    Encoded,
    TinyVLMConfig,
    build_tiny_qwen2vl,
    build_tiny_vlm,
    encode_prompt_mm,
    is_vision_model,
    load_processor,
    prompt_length,
)
from longrl.types import Prompt


def png(size=(96, 96), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


SMALL_LM = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=256)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    cfg = TinyVLMConfig(vision_hidden_size=32, vision_intermediate_size=64, reading_steps=0)
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm"), cfg, SMALL_LM, task_corpus(200))


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("qwen2vl"))


def test_tiny_vlm_reloads_and_runs_forward_and_backward_on_images(vlm_dir):
    model, tok = load_model(vlm_dir)
    proc = load_processor(vlm_dir)
    assert type(model).__name__ == "LlavaForConditionalGeneration" and is_vision_model(model)
    assert model.config.eos_token_id == tok.eos_token_id
    p = Prompt(id="a", text="<image>\nWhat is 3+4?", reference="7", task="math", images=[png()])
    enc = encode_prompt_mm(tok, proc, p)
    n_img = TinyVLMConfig().image_tokens
    assert enc.ids.count(model.config.image_token_id) == n_img == 36
    assert enc.ids == encode_prompt(tok, "<image>" * n_img + "\nWhat is 3+4?")
    assert list(enc.mm) == ["pixel_values"] and enc.mm["pixel_values"].shape == (1, 3, 96, 96)
    out = model(input_ids=torch.tensor([enc.ids]), pixel_values=enc.mm["pixel_values"])
    out.logits.float().sum().backward()
    no_grad = [n for n, w in model.named_parameters() if w.grad is None or not w.grad.any()]
    assert all("post_layernorm" in n for n in no_grad), no_grad  # vision_feature_layer=-1: every layer trains
    assert prompt_length(tok, proc, p) == len(enc.ids)


def test_images_change_the_logits(vlm_dir):
    model, tok = load_model(vlm_dir)
    proc = load_processor(vlm_dir)
    model.eval()
    logits = []
    for seed in (0, 1):
        enc = encode_prompt_mm(tok, proc, Prompt(id="a", text="<image>?", reference="", task="math",
                                                 images=[png(seed=seed)]))
        with torch.no_grad():
            logits.append(model(input_ids=torch.tensor([enc.ids]), **enc.mm).logits[0, -1])
    assert not torch.allclose(logits[0], logits[1])


def test_text_prompts_encode_exactly_as_before(vlm_dir, chatml_model_dir):
    for path, chat in ((vlm_dir, False), (chatml_model_dir, True)):
        _, tok = load_model(path)
        proc = load_processor(path)
        p = Prompt(id="t", text="Use 3 5 7 to make 15.", reference="", task="countdown")
        assert encode_prompt_mm(tok, proc, p, chat) == Encoded(encode_prompt(tok, p.text, chat), None)
    assert proc is None  # a text-only folder has no processor


def test_text_only_model_refuses_image_prompts(tiny_model_dir):
    _, tok = load_model(tiny_model_dir)
    p = Prompt(id="img-7", text="<image>?", reference="", task="math", images=[png()])
    with pytest.raises(UserError, match=r"prompt img-7 has 1 image\(s\) but the model is text-only"):
        encode_prompt_mm(tok, load_processor(tiny_model_dir), p)


def test_placeholder_and_image_faults_name_the_prompt(vlm_dir):
    _, tok = load_model(vlm_dir)
    proc = load_processor(vlm_dir)
    cases = [(Prompt(id="p1", text="no placeholder", reference="", task="math", images=[png()]),
              "prompt p1: the prompt has 0 <image> placeholder(s) but 1 image(s)"),
             (Prompt(id="p2", text="<image><image>", reference="", task="math", images=[png()]),
              "prompt p2: the prompt has 2 <image> placeholder(s) but 1 image(s)"),
             (Prompt(id="p3", text="<image>", reference="", task="math", images=[b"junk"]),
              "prompt p3: cannot decode image"),
             (Prompt(id="p4", text="<image>", reference="", task="math"),
              "prompt p4: the prompt has 1 <image> placeholder(s) but 0 image(s)")]
    for p, msg in cases:
        with pytest.raises(UserError, match=re.escape(msg)):
            encode_prompt_mm(tok, proc, p)


def test_tiny_qwen2vl_tokens_match_the_grid_and_the_model_runs(qwen_dir):
    model, tok = load_model(qwen_dir)
    proc = load_processor(qwen_dir)  # the PIL image processor: no torchvision here
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"},
                                         {"type": "image"}]}]
    p = Prompt(id="q", text="", reference="", task="math", messages=msgs, images=[png((56, 56)), png((84, 60), 1)])
    enc = encode_prompt_mm(tok, proc, p, chat_template=True)
    grid = enc.mm["image_grid_thw"]
    assert grid.tolist() == [[1, 4, 4], [1, 4, 6]]  # [t, h, w]: 84 px wide x 60 high -> 56 high
    assert enc.mm["pixel_values"].shape == (16 + 24, 3 * 2 * 14 * 14)
    pad, start = tok.convert_tokens_to_ids(["<|image_pad|>", "<|vision_start|>"])
    assert enc.ids.count(pad) == 4 + 6 == int(grid.prod(-1).sum()) // 4 and enc.ids.count(start) == 2
    text = tok.decode(enc.ids)
    assert text.startswith("<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>What")
    ids = torch.tensor([enc.ids])
    out = model(input_ids=ids, mm_token_type_ids=(ids == pad).int(), **enc.mm)
    assert out.logits.shape[:2] == ids.shape


def test_qwen_refuses_a_prompt_holding_the_image_token_itself(qwen_dir):
    _, tok = load_model(qwen_dir)
    p = Prompt(id="raw", text="<image><|image_pad|>", reference="", task="math", images=[png((56, 56))])
    with pytest.raises(UserError, match=r"prompt raw: 5 image token\(s\) '<\|image_pad\|>' after encoding, but "
                                        r"the processor gives its image\(s\) 4"):
        encode_prompt_mm(tok, load_processor(qwen_dir), p)


def test_warm_up_examples_keep_image_bytes_and_give_the_eager_pixel_inputs(vlm_dir):
    from longrl.models.vision import LazyPixels, concat_mm
    from longrl.tasks import render
    from longrl.train.batch import micro_batches
    from longrl.train.sft import encode_examples

    _, tok = load_model(vlm_dir)
    proc = load_processor(vlm_dir)
    examples = render.sft_examples(0, 3)
    seqs = encode_examples(tok, examples, 512, processor=proc)
    assert all(isinstance(s.mm, LazyPixels) for s in seqs)
    eager = [encode_prompt_mm(tok, proc, Prompt(f"e{i}", e.prompt, None, "", images=e.images)).mm
             for i, e in enumerate(examples)]
    batch = micro_batches(seqs, 1 << 20, tok.pad_token_id)[0]
    assert torch.equal(batch.mm["pixel_values"], concat_mm([eager[i] for i in batch.index.tolist()])["pixel_values"])
