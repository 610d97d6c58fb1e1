import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("LONGRL_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A freshly built (untrained) tiny Llama + BPE tokenizer, saved in HF format."""
    from longrl.models.tiny import TinyModelConfig, build_tiny_model, task_corpus

    out = tmp_path_factory.mktemp("tiny")
    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=256)
    return build_tiny_model(out, cfg, task_corpus(300))


CHATML_TEMPLATE = (  # Qwen2.5-Instruct's template without tools: a default system turn, then ChatML turns
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@pytest.fixture(scope="session")
def chatml_model_dir(tmp_path_factory):
    """A tiny untrained Qwen2 instruct-style checkpoint: ChatML template, ``<|im_end|>`` as the
    tokenizer's EOS, and ``generation_config.json`` listing ``<|im_end|>`` and ``<|endoftext|>``
    (as Qwen2.5-Instruct does)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from longrl.models.tiny import task_corpus

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    corpus = task_corpus(200) + ["You are a helpful assistant.", "system user assistant"] * 20
    bpe.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe)
    tok.add_special_tokens({"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>",
                            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML_TEMPLATE
    end_of_text, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=end_of_text, eos_token_id=im_end,
                         pad_token_id=end_of_text)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=end_of_text, eos_token_id=[im_end, end_of_text],
                                               pad_token_id=end_of_text)
    out = tmp_path_factory.mktemp("chatml")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
