"""Loading and saving Hugging Face causal LMs and vision-language models, with clear errors for bad
directories."""

from __future__ import annotations

from pathlib import Path

from longrl.errors import UserError


def check_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model.path: {path} is not a directory (a local Hugging Face model folder)")
    if not (path / "config.json").is_file():
        raise UserError(f"model.path: {path} has no config.json; is it a Hugging Face model folder?")
    return path


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    path = check_dir(path)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"model.path: cannot load a tokenizer from {path}: {e}") from e
    if tok.pad_token_id is None:  # many base checkpoints ship without one; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def resolve_device(name: str = "auto") -> str:
    """``auto``: the GPU when torch sees one, else the CPU; otherwise ``name`` itself (``cpu``, ``cuda:1``)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device={name}: torch sees no GPU here; use model.device=cpu (or auto)")
    return name


def is_vision_model(model_or_config) -> bool:
    """Whether a model, its config, or a ``config.json`` dict is a vision-language one (has a vision tower)."""
    config = getattr(model_or_config, "config", model_or_config)
    if isinstance(config, dict):
        return config.get("vision_config") is not None
    return getattr(config, "vision_config", None) is not None


def load_model(path: str | Path, dtype: str = "float32"):
    """Load ``(model, tokenizer)`` from a local folder; the model is in train mode on CPU.

    A vision-language folder (its config has a ``vision_config``: LLaVA, Qwen2-VL, ...) loads with
    ``AutoModelForImageTextToText``, any other with ``AutoModelForCausalLM``; its processor comes
    from :func:`longrl.models.vision.load_processor`.
    """
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    path = check_dir(path)
    tokenizer = load_tokenizer(path)
    if is_vision_model(json.loads((path / "config.json").read_text())):
        auto, kind = AutoModelForImageTextToText, "vision-language model"
    else:
        auto, kind = AutoModelForCausalLM, "causal LM"
    try:
        model = auto.from_pretrained(path, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as e:
        raise UserError(f"model.path: cannot load a {kind} from {path}: {e}") from e
    if getattr(model.config, "eos_token_id", None) is None:  # a VLM's may sit in its text_config only
        text_eos = getattr(model.config.get_text_config(), "eos_token_id", None)
        model.config.eos_token_id = text_eos if text_eos is not None else tokenizer.eos_token_id
    return model, tokenizer


def save_model(model, tokenizer, out_dir: str | Path, extra: dict | None = None, processor=None) -> Path:
    """Save in Hugging Face format (safetensors); ``extra`` goes to ``longrl.json`` (lineage etc.).
    A vision-language model's ``processor`` is saved with it (its tokenizer included), so that
    ``load_processor`` finds it in ``out_dir``; refused when missing, rather than a folder that
    cannot read images."""
    import json

    if processor is None and is_vision_model(model):
        raise ValueError("save_model: a vision-language model is saved with its processor")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    (processor or tokenizer).save_pretrained(out_dir)
    if extra:
        (out_dir / "longrl.json").write_text(json.dumps(extra, indent=2))
    return out_dir


# Config fields that fix the shapes of a causal LM's weights.
ARCH_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size", "max_position_embeddings", "tie_word_embeddings")


def architecture(config) -> dict:
    """The shape-defining fields of a transformers config (object or dict); a vision-language model's
    are its language model's, under its own ``model_type``."""
    text = config.get("text_config") if isinstance(config, dict) else getattr(config, "text_config", None)
    arch = architecture(text) if text is not None else {}
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    return arch | {k: get(k) for k in ARCH_FIELDS if get(k) is not None}


def tiny_architecture(tiny, vision: bool = False) -> dict:
    """What ``build_tiny_model`` (``build_tiny_vlm`` with ``vision``) makes from a ``TinyModelConfig``
    (vocab size depends on the corpus)."""
    return {"model_type": "llava" if vision else "llama", "hidden_size": tiny.hidden_size,
            "num_hidden_layers": tiny.num_layers,
            "num_attention_heads": tiny.num_heads, "num_key_value_heads": tiny.num_heads,
            "intermediate_size": tiny.intermediate_size, "max_position_embeddings": tiny.max_positions}


def check_architecture(model, expected: dict, expected_from: str, checkpoint: str | Path) -> None:
    """Refuse a checkpoint whose architecture differs from the one the run was configured with."""
    have = architecture(model.config)
    diff = [f"{k}: {have.get(k)!r} (checkpoint) vs {v!r} ({expected_from})"
            for k, v in expected.items() if k in have and have[k] != v]
    if diff:
        raise UserError(f"checkpoint {checkpoint} has a different model architecture than {expected_from}: "
                        + "; ".join(diff))


def context_length(model) -> int:
    return context_of(model.config)


def context_of(config) -> int:
    """The context length of a model config in tokens (a vision-language model's: its language model's)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(getattr(text, "max_position_embeddings", 1 << 30))


def encode_prompt(tokenizer, text: str | list[dict[str, str]], chat_template: bool = False,
                  messages: list[dict[str, str]] | None = None) -> list[int]:
    """Token ids of a prompt, wrapped as a user turn when ``chat_template`` (instruct models).

    A plain prompt gets the special tokens the tokenizer adds by default (a Llama-family BOS; the
    built-in tiny tokenizer adds none), except an EOS after it, which would end the sample before
    it starts. A chat template writes its own special tokens into the text.

    ``messages`` (a prompt stored as chat messages, :attr:`Prompt.messages`) replaces ``text``:
    the chat template renders them all; without it a system message and one user message are
    joined as plain text, and a conversation with earlier assistant turns is refused. ``text``
    may itself be such a list (an SFT or DPO file's prompt column in chat format).
    """
    if not isinstance(text, str):
        text, messages = "", list(text)
    if chat_template:
        if tokenizer.chat_template is None:
            raise UserError("model.chat_template=true but the tokenizer has no chat template")
        turns = messages if messages else [{"role": "user", "content": text}]
        # transformers 5 returns a dict unless told otherwise (list() of it is its keys)
        ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=False)
        return [int(i) for i in ids]
    if messages:
        text = plain_messages(messages)
    ids = list(tokenizer(text)["input_ids"])
    if ids and ids[-1] == tokenizer.eos_token_id and not text.endswith(str(tokenizer.eos_token)):
        ids.pop()
    return ids


def plain_messages(messages: list[dict[str, str]]) -> str:
    """Chat messages as the plain text a model without a chat template sees.

    >>> plain_messages([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}])
    'Be brief.\n\n2+2?'
    """
    roles = [m.get("role") for m in messages]
    if any(r not in ("system", "user") for r in roles) or roles.count("user") != 1 or roles[-1] != "user":
        raise UserError(f"a prompt with chat turns {roles} needs the model's chat template "
                        "(set model.chat_template=true); without it only a system and one user message are read")
    return "\n\n".join(str(m.get("content", "")).strip() for m in messages)


def end_of_turn_ids(tokenizer, chat_template: bool = False) -> list[int]:
    """What a response to train on ends with, so the model learns to stop where generation stops:
    the tokenizer's EOS, or with ``chat_template`` the tokens the template writes after an
    assistant message, up to its first special token (ChatML: ``<|im_end|>``, without the newline
    that follows it)."""
    eos = [tokenizer.eos_token_id]
    if not chat_template:
        return eos
    mark = "\x00longrl-response\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}],
                                         tokenize=False)
    if mark not in text:
        return eos
    after = tokenizer(text[text.rindex(mark) + len(mark):], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    end = next((i for i, t in enumerate(after) if t in special), None)
    return [int(t) for t in after[: end + 1]] if end is not None else eos


def stop_token_ids(tokenizer, source=None, chat_template: bool = False) -> list[int]:
    """Every token id that ends a response: the tokenizer's EOS and the model's ``eos_token_id``s.

    ``source`` is a model folder (its ``config.json`` and, when present, ``generation_config.json``),
    a loaded model (its ``config`` and ``generation_config``), or a config (object or dict). Real
    instruct checkpoints list several: Qwen2.5-Instruct's ``generation_config.json`` has
    ``<|im_end|>`` and ``<|endoftext|>``; the tokenizer names only the first. With ``chat_template``
    the template's end-of-turn token (:func:`end_of_turn_ids`, what SFT and DPO teach a response to end
    with) is one too: a base checkpoint that ships a ChatML template (Qwen2.5 base) names only
    ``<|endoftext|>`` in its configs.
    """
    import json

    found = [tokenizer.eos_token_id]
    if isinstance(source, (str, Path)):
        for name in ("config.json", "generation_config.json"):
            f = Path(source) / name
            if f.is_file():
                found.append(json.loads(f.read_text()).get("eos_token_id"))
    elif isinstance(source, dict):
        found.append(source.get("eos_token_id"))
    elif source is not None:
        for cfg in (getattr(source, "config", None), getattr(source, "generation_config", None), source):
            found.append(getattr(cfg, "eos_token_id", None))
    if chat_template:
        found.append(end_of_turn_ids(tokenizer, True)[-1:])
    ids: set[int] = set()
    for v in found:
        ids.update(int(i) for i in (v if isinstance(v, (list, tuple)) else [v]) if i is not None)
    return sorted(ids)


def quiet_transformers() -> None:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards") and its
    warnings; longrl shows its own progress. Every verb calls it, and so does each Ray worker."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
