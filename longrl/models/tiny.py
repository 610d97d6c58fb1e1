"""The built-in tiny model: a standard Llama built from a config, with its own small tokenizer.

Everything downstream loads it with ``from_pretrained`` from a directory written by
``save_pretrained``, so the quickstart takes exactly the code path of a real checkpoint.

The tokenizer is a byte-level BPE trained with the ``tokenizers`` library on the built-in task's
text: any input can be encoded (bytes are the base alphabet), frequent words of the traces become
single tokens, and digits are always split one by one (as in Llama and Qwen) so arithmetic is
learned digit by digit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PAD, EOS = "<|pad|>", "<|eos|>"


@dataclass
class TinyModelConfig:
    hidden_size: int = 128  # width; 128 x 3 layers is ~0.6M parameters with this vocab
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 512  # MLP width (4x hidden)
    max_positions: int = 512  # context length in tokens (prompt + response)
    vocab_size: int = 384  # BPE vocabulary incl. the 256 bytes and the special tokens
    seed: int = 0  # initialisation seed


@dataclass
class TinyVLMConfig:
    """The built-in tiny VLM's vision side (``model.tiny_vision``): a CLIP-style vision tower and a
    projector before the built-in Llama (``model.tiny``, a :class:`TinyModelConfig`)."""

    image_size: int = 96  # pixels per side the processor resizes to (the built-in visual tasks draw 96x96)
    patch_size: int = 16  # pixels per patch side: (96 / 16)^2 = 36 image tokens per image
    vision_hidden_size: int = 128  # vision tower width
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate_size: int = 512  # vision MLP width (4x hidden)
    # steps of pretraining the tower to read the built-in drawings before the language model sees it
    # (longrl.models.vision.pretrain_tower); 0 leaves it randomly initialised
    reading_steps: int = 200

    @property
    def image_tokens(self) -> int:
        """Image tokens per image: one per patch (the CLS feature is dropped)."""
        return (self.image_size // self.patch_size) ** 2


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Byte-level BPE with single-digit tokens, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS)


def build_tiny_model(out_dir: str | Path, config: TinyModelConfig, corpus: Iterable[str]) -> Path:
    """Train the tokenizer, initialise a Llama from ``config``, and save both to ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(corpus, config.vocab_size)
    hf_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(hf_config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def task_corpus(n: int = 4000, seed: int = 0) -> list[str]:
    """Text the tokenizer is trained on: prompts and traces of the built-in task."""
    from longrl.tasks import countdown

    return [p + r for p, r in countdown.sft_examples(seed, n)]
