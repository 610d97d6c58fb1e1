"""Loading and saving Hugging Face causal LMs, with clear errors for bad directories."""

from __future__ import annotations

from pathlib import Path

from longrl.errors import UserError


def _check_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model.path: {path} is not a directory (a local Hugging Face model folder)")
    if not (path / "config.json").is_file():
        raise UserError(f"model.path: {path} has no config.json; is it a Hugging Face model folder?")
    return path


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    path = _check_dir(path)
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


def load_model(path: str | Path, dtype: str = "float32"):
    """Load ``(model, tokenizer)`` from a local folder; the model is in train mode on CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    path = _check_dir(path)
    tokenizer = load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as e:
        raise UserError(f"model.path: cannot load a causal LM from {path}: {e}") from e
    if model.config.eos_token_id is None:
        model.config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def save_model(model, tokenizer, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Save in Hugging Face format (safetensors); ``extra`` goes to ``longrl.json`` (lineage etc.)."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if extra:
        (out_dir / "longrl.json").write_text(json.dumps(extra, indent=2))
    return out_dir


# Config fields that fix the shapes of a causal LM's weights.
ARCH_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size", "max_position_embeddings", "tie_word_embeddings")


def architecture(config) -> dict:
    """The shape-defining fields of a transformers config (object or dict)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    return {k: get(k) for k in ARCH_FIELDS if get(k) is not None}


def tiny_architecture(tiny) -> dict:
    """What ``build_tiny_model`` makes from a ``TinyModelConfig`` (vocab size depends on the corpus)."""
    return {"model_type": "llama", "hidden_size": tiny.hidden_size, "num_hidden_layers": tiny.num_layers,
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
    return int(getattr(model.config, "max_position_embeddings", 1 << 30))


def encode_prompt(tokenizer, text: str, chat_template: bool = False) -> list[int]:
    """Token ids of a prompt, wrapped as a user turn when ``chat_template`` (instruct models)."""
    if chat_template:
        if tokenizer.chat_template is None:
            raise UserError("model.chat_template=true but the tokenizer has no chat template")
        return list(tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                  add_generation_prompt=True, tokenize=True))
    return tokenizer(text, add_special_tokens=False)["input_ids"]
