"""Config loading: presets, overrides, validation messages."""

import pytest

from longrl.config import load_config
from longrl.errors import UserError


def test_overrides_and_scientific_notation(tmp_path):
    cfg = load_config(None, ["rl.tau=0.05", "rollout.k=16", "rl.lr=2e-5", "rl.horizon=128"])
    assert (cfg.rl.tau, cfg.rollout.k, cfg.rl.lr, cfg.rl.horizon) == (0.05, 16, 2e-5, 128)
    f = tmp_path / "c.yaml"
    f.write_text("rl:\n  lr: 1e-4\n  iterations: 3\n")
    cfg = load_config(str(f))
    assert cfg.rl.lr == 1e-4 and cfg.rl.iterations == 3


@pytest.mark.parametrize("override,message", [
    ("rollout.kk=3", "did you mean 'rollout.k'"),
    ("rollout.k=2.5", "rollout.k: expected int"),
    ("rl.algorithm=ppo", "choose from"),
    ("rl.lr=1e-4x", "rl.lr: expected float"),
    ("rollout", "expected KEY=VALUE"),
    ("model.device=gpu", "model.device: 'gpu'; choose auto, cpu, cuda or cuda:N"),
    ("rollout.placement=remote", "rollout.placement: 'remote'; choose colocated or separate"),
    ("cluster.backend=slurm", "cluster.backend: 'slurm'; choose local or ray"),
    ("cluster.trainer_workers=0", "cluster.trainer_workers and cluster.rollout_workers must be >= 1"),
    ("cluster.cpus_per_worker=0", "cluster.cpus_per_worker must be > 0"),
    ("sft.search_order=sorted", "sft.search_order: 'sorted'; choose random or fixed"),
    ("rl.scale_rewards=std", "rl.scale_rewards='std': choose none, group or batch"),
])
def test_bad_overrides(override, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [override])


def test_ablation_knobs_are_refused_where_they_do_not_apply():
    with pytest.raises(UserError, match="rest trains on weights"):
        load_config(None, ["rl.algorithm=rest", "rl.scale_rewards=group"])
    assert load_config(None, ["rl.scale_rewards=group"]).rl.scale_rewards == "group"
    with pytest.raises(UserError, match="rl.token_mean applies to mirror_descent only, not grpo"):
        load_config(None, ["rl.algorithm=grpo", "rl.token_mean=true"])


def test_unknown_preset():
    with pytest.raises(UserError, match="quickstart"):
        load_config("no-such-preset")


def test_cuda_device_without_a_gpu_is_refused():
    import torch

    from longrl.models.loading import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a GPU is present; this checks the refusal on a machine without one")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(UserError, match="model.device=cuda: torch sees no GPU"):
        resolve_device("cuda")
