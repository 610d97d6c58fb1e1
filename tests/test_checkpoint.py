"""Atomic checkpoints: a crash mid-save leaves the previous checkpoint as `latest`, loadable."""

import pytest

from longrl.models import load_model
from longrl.train import checkpoint as ckpt


def test_crash_mid_save_keeps_previous(tiny_model_dir, tmp_path, monkeypatch):
    model, tok = load_model(tiny_model_dir)
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 1, model, tok, {"iteration": 1}, keep=2)
    import longrl.models.loading as loading

    real = loading.save_model

    def dies_halfway(model, tok, out, extra=None, processor=None):
        real(model, tok, out, extra, processor)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(loading, "save_model", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(root, 2, model, tok, {"iteration": 2}, keep=2)
    monkeypatch.setattr(loading, "save_model", real)
    last = ckpt.latest_checkpoint(root)
    assert last.name == "iter_1" and ckpt.load_state(last) == {"iteration": 1}
    load_model(last)  # still a complete Hugging Face folder
    assert not (root / "iter_2").exists()
    # the next save cleans the leftover temporary folder and prunes to `keep`
    for i in (2, 3, 4):
        ckpt.save_checkpoint(root, i, model, tok, {"iteration": i}, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["iter_3", "iter_4", "latest"]


def test_rng_state_round_trip():
    import random

    import torch

    s = ckpt.rng_state()
    a = (random.random(), torch.rand(1).item())
    ckpt.set_rng_state(s)
    assert (random.random(), torch.rand(1).item()) == a
