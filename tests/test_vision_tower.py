"""The built-in tiny VLM's vision tower: pretrained to read the drawn problems, and kept frozen
(``model.freeze_vision_tower``) through SFT and RL while the projector and language model train."""

from itertools import islice

import pytest
import torch

from longrl.config import SFTConfig, load_config
from longrl.errors import UserError
from longrl.models.loading import load_model
from longrl.models.tiny import TinyModelConfig, TinyVLMConfig
from longrl.models.vision import build_tiny_vlm, freeze_vision_tower, load_processor, pretrain_tower, vision_tower
from longrl.tasks import countdown, render
from longrl.train.sft import encode_examples, run_sft
from test_cli import longrl
from test_vision_run import MIX, _sets

TOWER = dict(vision_hidden_size=32, vision_intermediate_size=64, vision_layers=1)
LM = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


def _build(path, reading_steps):
    return build_tiny_vlm(path, TinyVLMConfig(**TOWER, reading_steps=reading_steps), LM,
                          [e[0] + e[1] for e in render.sft_examples(0, 100)])


def _tower_state(model):
    return {n: p.detach().clone() for n, p in vision_tower(model).named_parameters()}


def test_a_pretrained_tower_reads_held_out_drawings_and_a_random_one_does_not(tmp_path):
    model, _ = load_model(_build(tmp_path / "vlm", 0))
    processor = load_processor(tmp_path / "vlm")
    train = render.reading_examples(islice(countdown.train_prompts(7), 1024))
    held = render.reading_examples(countdown.heldout_prompts(10))
    assert pretrain_tower(model, processor, train, held, 0) < 0.3  # a random tower and readout: near 1 in 10
    assert pretrain_tower(model, processor, train, held, 60) >= 0.9


def test_the_build_pretrains_the_tower_and_nothing_else(tmp_path):
    plain, _ = load_model(_build(tmp_path / "a", 0))
    read, _ = load_model(_build(tmp_path / "b", 20))
    moved = {n for (n, a), (_, b) in zip(plain.named_parameters(), read.named_parameters()) if not torch.equal(a, b)}
    tower = {n for n, _ in plain.named_parameters() if ".vision_tower." in f".{n}"}
    assert moved and moved <= tower


def test_sft_with_a_frozen_tower_trains_the_rest(tmp_path):
    model, tok = load_model(_build(tmp_path / "vlm", 0))
    processor = load_processor(tmp_path / "vlm")
    frozen = freeze_vision_tower(model)
    assert frozen == sum(p.numel() for p in vision_tower(model).parameters()) > 0
    before_tower, before_lm = _tower_state(model), model.lm_head.weight.detach().clone()
    seqs = encode_examples(tok, render.sft_examples(0, 16), 512, processor=processor)
    run_sft(model, tok, seqs, SFTConfig(batch_tokens=1024, lr=1e-2), progress=False)
    assert all(torch.equal(p, before_tower[n]) for n, p in vision_tower(model).named_parameters())
    assert not torch.equal(model.lm_head.weight, before_lm)


def test_a_run_with_a_frozen_tower_keeps_the_warm_tower_through_rl(tmp_path):
    out = tmp_path / "runs"
    r = longrl("train", *_sets([MIX, "model.freeze_vision_tower=true", "rl.iterations=1", "rl.lr=1e-2",
                                "rl.lr_final=null"]), "--out", str(out), "--name", "f", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (warm,) = [p for p in (out / "_warm").iterdir() if (p / "config.json").is_file()]
    start, _ = load_model(warm)
    trained, _ = load_model(out / "f" / "checkpoints" / "iter_1")
    moved = {n for (n, a), (_, b) in zip(start.named_parameters(), trained.named_parameters()) if not torch.equal(a, b)}
    assert moved and not any("vision_tower" in n for n in moved)
    assert any("multi_modal_projector" in n for n in moved) and any("language_model" in n for n in moved)


def test_freezing_needs_a_vision_tower(tmp_path):
    with pytest.raises(UserError, match="no vision tower"):
        load_config(None, ["model.freeze_vision_tower=true"])
    with pytest.raises(UserError, match="reading_steps=-1"):
        load_config(None, ["model.vision=true", "model.tiny_vision.reading_steps=-1"])
    text_model, _ = load_model(_text_model(tmp_path))
    with pytest.raises(UserError, match="LlamaForCausalLM has no vision tower"):
        freeze_vision_tower(text_model)


def _text_model(tmp_path):
    from longrl.models.tiny import build_tiny_model, task_corpus

    return build_tiny_model(tmp_path / "text", LM, task_corpus(100))


def test_a_qwen2_vl_freezes_its_whole_visual_module(tmp_path):
    from longrl.models.vision import build_tiny_qwen2vl

    model, _ = load_model(build_tiny_qwen2vl(tmp_path / "qwen"))
    frozen = freeze_vision_tower(model)
    assert vision_tower(model) is model.model.visual
    assert frozen == sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    assert all(p.requires_grad == (".visual." not in f".{n}") for n, p in model.named_parameters())


_FSDP_FROZEN = """
import socket, sys, tempfile, torch, torch.distributed as dist
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
from longrl.config import ClusterConfig
from longrl.distributed.fsdp import shard_model
from longrl.models.loading import load_model
from longrl.models.vision import freeze_vision_tower, load_processor, vision_tower
from longrl.tasks import render
from longrl.train.batch import micro_batches, token_logprobs, trainable
from longrl.train.sft import encode_examples
model, tok = load_model(sys.argv[1])
processor = load_processor(sys.argv[1])
freeze_vision_tower(model)
shard_model(model, ClusterConfig(sharding="fsdp"))
assert not any(p.requires_grad for p in vision_tower(model).parameters())
before = {n: p.detach().full_tensor().clone() for n, p in model.named_parameters()}
batch = micro_batches(encode_examples(tok, render.sft_examples(0, 4), 512, processor=processor), 1 << 20,
                      tok.pad_token_id)[0]
opt = torch.optim.AdamW(trainable(model), lr=1e-2)
(-token_logprobs(model, batch).sum()).backward()
opt.step()
moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach().full_tensor(), before[n])}
assert moved and not any("vision_tower" in n for n in moved), sorted(moved)
print("ok")
"""


def test_fsdp_keeps_a_frozen_tower_frozen(tmp_path):
    """fully_shard keeps requires_grad=False on the tower's weights, and a step leaves them as they were."""
    import subprocess
    import sys

    path = _build(tmp_path / "vlm", 0)
    r = subprocess.run([sys.executable, "-c", _FSDP_FROZEN, str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
