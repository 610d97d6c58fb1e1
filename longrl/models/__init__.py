"""Models: load any local Hugging Face causal LM, or build the built-in tiny one."""

from longrl.models.loading import load_model, load_tokenizer, save_model

__all__ = ["load_model", "load_tokenizer", "save_model"]
