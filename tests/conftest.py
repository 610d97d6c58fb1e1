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
