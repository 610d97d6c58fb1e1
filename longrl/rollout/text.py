"""Text in, text out over a local model: the rollout engines as ``curate`` and ``warmup-data`` use them.

:func:`open_engine` loads a model folder behind the ``hf`` or ``vllm`` engine with the stop tokens
its chat template needs; :func:`sample_responses` draws n responses for each of a list of prompts
(one engine call, batched across prompts) with seeds that depend only on the prompt's id and the
sample index, so a resumed or re-chunked run draws the same responses.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from longrl.errors import UserError
from longrl.types import GenRequest, Prompt, SamplingParams

ENGINES = ("hf", "vllm")


@dataclass
class Response:
    text: str
    tokens: int
    stop: str  # the engine's stop reason: eos, max_length, repetition


@dataclass
class TextEngine:
    """An engine with the tokenizer, processor and prompt rendering that go with it."""

    engine: object
    tokenizer: object
    chat_template: bool
    context: int  # the model's context length in tokens
    close: Callable[[], None]
    processor: object = None  # a vision-language model's processor; None for a text-only model

    def encode(self, prompt: Prompt):
        """The prompt's :class:`~longrl.models.vision.Encoded` ids (and pixel inputs for images)."""
        from longrl.models.vision import encode_prompt_mm

        return encode_prompt_mm(self.tokenizer, self.processor, prompt, self.chat_template)


def open_engine(model_dir: str | Path, *, engine: str = "hf", dtype: str = "float32", chat_template: bool = False,
                max_batch: int = 256, seed: int = 0, field: str = "--model") -> TextEngine:
    """Load ``model_dir`` behind the named rollout engine; a folder that is not a model is refused by name.

    Nothing is trained here, so the ``hf`` engine holds the weights in ``dtype`` itself (no fp32
    master copy), and the ``vllm`` engine loads them once, in vLLM.
    """
    from transformers import AutoConfig

    from longrl.models.loading import context_of, load_model, load_tokenizer, resolve_device, stop_token_ids
    from longrl.models.vision import load_processor

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise UserError(f"{field} {model_dir}: not a Hugging Face model folder (no config.json there)")
    if engine not in ENGINES:
        raise UserError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    tok = load_tokenizer(path)
    if chat_template and tok.chat_template is None:
        raise UserError(f"{field} {model_dir}: the chat template was asked for but the tokenizer has none")
    ctx = context_of(AutoConfig.from_pretrained(path))
    processor = load_processor(path)
    stops = stop_token_ids(tok, path, chat_template)
    if engine == "hf":
        from longrl.rollout.hf import HFEngine

        model, _ = load_model(path, dtype)
        model.to(resolve_device())
        model.eval()
        eng = HFEngine(model, stops, tok.pad_token_id, max_batch)
        return TextEngine(eng, tok, chat_template, ctx, lambda: None, processor)
    from longrl.rollout.vllm import VLLMEngine

    eng = VLLMEngine(path, stops, seed=seed, dtype=dtype, max_batch=max_batch)
    return TextEngine(eng, tok, chat_template, ctx, eng.close, processor)


def check_lengths(te: TextEngine, prompts: Sequence[Prompt], max_new_tokens: int, what: str = "prompt") -> None:
    """Refuse, before any sampling, a prompt whose tokens plus ``max_new_tokens`` exceed the context."""
    for p in prompts:
        n = len(te.encode(p).ids)
        if n + max_new_tokens > te.context:
            raise UserError(f"{what} {p.id!r}: {n} tokens plus {max_new_tokens} new ones exceed the model's "
                            f"context of {te.context}")


def prompt_seed(seed: int, prompt_id: str, sample: int) -> int:
    """A sample's seed from the run seed, the prompt's id and the sample index (not its batch position)."""
    return ((seed * 1_000_003 + zlib.crc32(prompt_id.encode())) * 256 + sample) % (1 << 62)


def sample_responses(te: TextEngine, prompts: Sequence[Prompt], *, n: int, max_new_tokens: int,
                     params: SamplingParams, seed: int = 0, salt: str = "",
                     prefixes: Sequence[str] | None = None) -> list[list[Response]]:
    """n responses for each prompt (one engine call for all of them), in prompt order.

    ``salt`` separates the seeds of two passes over the same prompts (e.g. difficulty and the
    hack filter). ``prefixes[i]`` is text the i-th prompt's responses start with (written after
    the prompt, as the model's own first tokens; the returned text leaves it out). A prompt too
    long for the context with ``max_new_tokens`` is refused by id.
    """
    reqs = []
    for i, p in enumerate(prompts):
        enc = te.encode(p)
        ids = enc.ids
        if prefixes and prefixes[i]:
            ids = ids + list(te.tokenizer(prefixes[i], add_special_tokens=False)["input_ids"])
        if len(ids) + max_new_tokens > te.context:
            raise UserError(f"prompt {p.id!r}: {len(ids)} tokens plus {max_new_tokens} new ones exceed the "
                            f"model's context of {te.context}")
        reqs += [GenRequest(ids, max_new_tokens, seed=prompt_seed(seed, salt + p.id, j), mm=enc.mm,
                            images=p.images) for j in range(n)]
    if not reqs:
        return []
    results = te.engine.generate(reqs, params)
    texts = te.tokenizer.batch_decode([r.token_ids for r in results], skip_special_tokens=True)
    flat = [Response(t, len(r.token_ids), r.stop_reason) for t, r in zip(texts, results)]
    return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]
