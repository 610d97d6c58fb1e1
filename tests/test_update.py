"""The trainer's update on the tiny model: micro-batch split invariance, optimizer reset."""

import pytest
import torch

from longrl.algo import get_algorithm
from longrl.models import load_model
from longrl.train.batch import Seq, micro_batches, token_logprobs


def _grads(model, seqs, max_tokens, pad):
    model.zero_grad()
    algo = get_algorithm("mirror_descent")
    denom = len(seqs) * 16
    for b in micro_batches(seqs, max_tokens, pad):
        logp = token_logprobs(model, b, temperature=0.7)
        (algo.loss(logp, b.ref_logp, b.loss_mask, b.advantages, tau=0.1, clip_eps=0.2) / denom).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_micro_batch_split_does_not_change_gradient(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    g = torch.Generator().manual_seed(0)
    seqs = []
    for i in range(7):
        n_prompt = 3 + i % 3
        n = n_prompt + 4 + (i * 5) % 9
        ids = torch.randint(2, len(tok), (n,), generator=g).tolist()
        ref = (-torch.rand(n - n_prompt, generator=g)).tolist()
        seqs.append(Seq(ids=ids, loss_start=n_prompt, advantage=float(i % 3 - 1), ref_logp=ref, index=i))
    whole = _grads(model, seqs, max_tokens=10_000, pad=tok.pad_token_id)
    split = _grads(model, seqs, max_tokens=20, pad=tok.pad_token_id)
    assert len(micro_batches(seqs, 20, tok.pad_token_id)) > 3
    torch.testing.assert_close(whole, split, rtol=1e-4, atol=1e-7)


def test_padding_is_masked(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    s = Seq(ids=[5, 6, 7, 8, 9], loss_start=2, ref_logp=[0.0, 0.0, 0.0])
    long = Seq(ids=list(range(3, 20)), loss_start=4, ref_logp=[0.0] * 13, index=1)
    alone = token_logprobs(model, micro_batches([s], 1000, tok.pad_token_id)[0])
    b = micro_batches([s, long], 1000, tok.pad_token_id)[0]
    together = token_logprobs(model, b)
    row = int((b.index == 0).nonzero())
    torch.testing.assert_close(together[row, :4], alone[0], rtol=1e-5, atol=1e-6)
    assert (together[row, 4:] == 0).all()


def test_fresh_optimizer_first_step_adamw_is_sign_sgd_is_gradient(tiny_model_dir):
    """What a reset optimizer's first step does: AdamW moves every weight by lr·sign(g); SGD by lr·g."""
    from longrl.config import load_config
    from longrl.train.update import fresh_optimizer

    for name in ("adamw", "sgd"):
        model, _ = load_model(tiny_model_dir)
        rl = load_config(None, [f"rl.optimizer={name}", "rl.lr=0.01"]).rl
        w = model.lm_head.weight if hasattr(model, "lm_head") else next(model.parameters())
        before = w.detach().clone()
        opt = fresh_optimizer(model, rl, rl.lr)
        g = torch.randn_like(w).sign() * (1 + torch.rand_like(w)) * 1e-3  # |g| >> Adam's eps
        w.grad = g.clone()
        opt.step()
        moved = w.detach() - before
        want = -0.01 * (torch.sign(g) if name == "adamw" else g)
        torch.testing.assert_close(moved, want, rtol=1e-3, atol=1e-7)


def test_lr_decays_by_a_cosine_from_lr_to_lr_final():
    from longrl.config import load_config
    from longrl.errors import UserError
    from longrl.train.update import iteration_lr

    rl = load_config(None, ["rl.lr=1e-4", "rl.lr_final=2e-5", "rl.iterations=11"]).rl
    lrs = [iteration_lr(rl, i) for i in range(11)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[5] == pytest.approx(6e-5) and lrs[10] == pytest.approx(2e-5)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert iteration_lr(load_config(None, ["rl.lr=1e-4", "rl.lr_final=null"]).rl, 7) == 1e-4  # constant
    with pytest.raises(UserError, match="rl.lr_final"):
        load_config(None, ["rl.lr=1e-4", "rl.lr_final=2e-4"])


@pytest.mark.parametrize("sets, scaled", [([], True), (["rl.lr_per_response=false"], False),
                                          (["rl.mini_batches=2", "rl.mini_batch_size=8"], False)])
def test_lr_per_response_scales_the_step_by_the_trained_batch(tiny_model_dir, sets, scaled):
    """8 trained responses of a nominal 4 x 4 = 16: by default the one reset-AdamW step moves weights
    by at most lr / 2; by lr with ``rl.lr_per_response=false``, or when ``rl.mini_batch_size`` already
    makes the number of steps follow the batch."""
    from longrl.config import load_config
    from longrl.train.update import policy_update, response_lr_scale

    model, _ = load_model(tiny_model_dir)
    cfg = load_config(None, ["rl.lr=1e-3", "rl.mini_batches=1", "rollout.batch_prompts=4", "rollout.k=4", *sets])
    seqs = [Seq(ids=[5 + i, 9, 7, 11 + i, 13, 6], loss_start=3, advantage=1.0 if i % 2 else -1.0, index=i)
            for i in range(8)]
    with torch.no_grad():
        for b in micro_batches(seqs, 10_000, 0):
            logp = token_logprobs(model, b)
            for row, idx in enumerate(b.index.tolist()):
                seqs[idx].ref_logp = logp[row, 2:5].tolist()
    before = [p.detach().clone() for p in model.parameters()]
    stats = policy_update(model, seqs, cfg, iteration=0, pad_id=0, lr_scale=response_lr_scale(cfg, len(seqs)))
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before))
    want = 1e-3 * (8 / 16 if scaled else 1)
    assert stats.lr == pytest.approx(want)
    assert want * 0.9 < moved <= want * 1.0001


def test_unknown_optimizer_is_refused():
    from longrl.config import load_config
    from longrl.errors import UserError

    with pytest.raises(UserError, match="rl.optimizer"):
        load_config(None, ["rl.optimizer=lion"])
