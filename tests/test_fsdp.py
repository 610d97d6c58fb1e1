"""cluster.sharding=fsdp: a Ray trainer group of 2 FSDP2 ranks on CPU (gloo) against one process."""

import copy

import pytest
import torch
from test_ray import _seqs

from longrl.config import load_config
from longrl.errors import UserError

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')


@pytest.fixture(scope="module")
def sharded(tiny_model_dir):
    """A 2-rank FSDP trainer group and a rollout worker on a local Ray instance.

    One sequence per micro-batch, so the ranks hold different numbers of micro-batches (the rank
    with fewer runs idle passes, as FSDP's collectives need). SGD steps along the gradient (a reset
    AdamW steps ~lr*sign(g), which float noise can flip), and a grad_clip small enough that the
    clipped norm — a global one across the shards — sets each step.
    """
    from longrl.distributed.ray_cluster import RayCluster

    rl = ["rl.micro_batch_tokens=1", "rl.optimizer=sgd", "rl.lr=1.0", "rl.lr_final=null", "rl.mini_batches=2",
          "rl.grad_clip=0.01"]
    cluster = ["cluster.backend=ray", "cluster.cpus_per_worker=0.5", "cluster.sharding=fsdp",
               "cluster.trainer_workers=2", "cluster.rollout_workers=1"]
    c = RayCluster(load_config(None, ["threads=1", *rl, *cluster]))
    try:
        yield c, c.trainer_group(tiny_model_dir), c.rollout_group(tiny_model_dir)
    finally:
        c.close()


def _flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def test_sharded_gradient_equals_single_process(sharded, tiny_model_dir):
    """FSDP sums the ranks' gradients (its default would average them) into the single-process one."""
    from longrl.models.loading import load_model
    from longrl.train.update import DataParallel, UpdateStats, batch_gradient

    cluster, group, _ = sharded
    model, tok = load_model(tiny_model_dir)
    seqs = _seqs(model)
    # 7 sequences: 4 micro-batches on rank 0, 3 on rank 1; seqs[:1]: rank 1 holds nothing, only idle passes
    for part in (seqs, seqs[:1]):
        model.zero_grad(set_to_none=True)
        batch_gradient(model, part, cluster.cfg, tok.pad_token_id, DataParallel(), UpdateStats())
        single = _flat_grad(model)
        dist = group.gradient(part)
        assert single.abs().max() > 0
        rel = float((dist - single).norm() / single.norm())
        assert rel < 1e-5, (len(part), rel)


def test_sharded_update_and_weight_sync_equal_single_process(sharded, tiny_model_dir):
    """One iteration_update (log pi_i recomputed, 2 clipped steps) in the sharded group and in one process;
    the sync then delivers those weights, layer by layer, to the driver's copy and the rollout worker."""
    from longrl.models.loading import load_model
    from longrl.train.update import iteration_update

    cluster, group, rollout = sharded
    cfg = cluster.cfg
    model, tok = load_model(tiny_model_dir)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    seqs = _seqs(model, n=9)
    versions = {s.index: [0] * (len(s.ids) - s.loss_start) for s in seqs}
    stats = group.update(copy.deepcopy(seqs), versions, 0, True)
    ref = iteration_update(model, seqs, versions, cfg, 0, tok.pad_token_id, True)
    assert stats.steps == ref.steps == 2
    assert stats.grad_norm == pytest.approx(ref.grad_norm, rel=1e-5) and ref.grad_norm > cfg.rl.grad_clip
    assert stats.loss == pytest.approx(ref.loss, rel=1e-5, abs=1e-9)
    assert stats.tokens == ref.tokens and stats.mismatch_tokens == ref.mismatch_tokens

    driver, _ = load_model(tiny_model_dir)
    group.sync_to(rollout, driver)
    pulled = ray.get(rollout.actors[0].__ray_call__.remote(
        lambda w: {k: v.detach().clone() for k, v in w.model.named_parameters()}))
    want = dict(model.named_parameters())
    assert set(pulled) == set(dict(driver.named_parameters())) == set(want)
    moved = max(float((want[k].detach() - start[k]).abs().max()) for k in want)
    assert moved > 1e-4
    for name, got in [("driver", dict(driver.named_parameters())), ("rollout worker", pulled)]:
        for k, v in want.items():
            assert torch.allclose(got[k], v, rtol=1e-5, atol=1e-7), (name, k, float((got[k] - v).abs().max()))


@pytest.mark.parametrize("sets, match", [
    (["cluster.sharding=fsdp"], r"cluster.sharding=fsdp .*needs cluster.backend=ray"),
    (["cluster.backend=ray", "cluster.sharding=zero3"], r"cluster.sharding: 'zero3'; choose replicate or fsdp"),
    (["cluster.backend=ray", "cluster.mixed_precision=true"], r"cluster.mixed_precision=true .*needs cluster.sharding=fsdp"),
])
def test_bad_sharding_config_is_refused(sets, match):
    with pytest.raises(UserError, match=match):
        load_config(None, sets)


def test_mixed_precision_on_a_cpu_without_bf16_is_refused(monkeypatch):
    from longrl import config

    sets = ["cluster.backend=ray", "cluster.sharding=fsdp", "cluster.mixed_precision=true"]
    monkeypatch.setattr(config, "_cpu_has_bf16", lambda: False)
    with pytest.raises(UserError, match=r"cluster.mixed_precision=true on CPU trainer workers.*no native bf16"):
        load_config(None, sets)
    load_config(None, [*sets, "cluster.gpus_per_worker=1"])  # GPU workers: accepted
    monkeypatch.setattr(config, "_cpu_has_bf16", lambda: True)
    load_config(None, sets)


def test_sharded_checkpoint_round_trip_and_reshards_to_one_process(sharded, tiny_model_dir, tmp_path):
    """Each rank writes its shard (DCP); the files load back into the 2 ranks after their weights moved,
    and into one plain, unsharded model in this process (2 ranks -> 1), both equal to the saved weights."""
    from torch.distributed.fsdp import FSDPModule

    from longrl.distributed.fsdp import gather_unit, load_shards
    from longrl.models.loading import load_model

    _, group, _ = sharded

    def gathered():
        refs = [a.__ray_call__.remote(lambda w: gather_unit(w.model, [n for u in w.units for n in u], keep=True))
                for a in group.actors]
        return group.get(refs)[0]

    def bump(w):
        assert isinstance(w.model, FSDPModule)
        with torch.no_grad():
            for p in w.model.parameters():
                p.add_(1.0)

    saved = gathered()
    group.save_shards(tmp_path / "sharded")
    assert sorted(f.name for f in (tmp_path / "sharded").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    group.get([a.__ray_call__.remote(bump) for a in group.actors])
    moved = gathered()
    assert all(torch.allclose(moved[k], v + 1.0) for k, v in saved.items())
    folder = str(tmp_path / "sharded")
    group.get([a.__ray_call__.remote(lambda w: load_shards(w.model, folder)) for a in group.actors])
    back = gathered()
    one, _ = load_model(tiny_model_dir)
    load_shards(one, tmp_path / "sharded")
    single = dict(one.named_parameters())
    assert set(back) == set(saved) == set(single)
    for k, v in saved.items():
        assert torch.equal(back[k], v), k
        assert torch.equal(single[k].detach(), v), k
