"""The k1.5 update checked three ways: golden numbers, a reference, invariances (STYLE §5)."""

import math

import pytest
import torch

from longrl.algo import get_algorithm
from longrl.algo.losses import (
    best_correct_weights,
    clipped_ratio_loss,
    mean_baseline,
    mirror_descent_loss,
    normalized_baseline,
    scaled_baseline,
)


def test_golden_mirror_descent():
    # Two sequences; the second has one masked (padding) token.
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]])
    ref = torch.tensor([[-1.5, -2.0], [-1.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([0.5, -0.5])
    tau = 0.2
    # seq logp: -3.0, -0.5 ; ref: -3.5, -1.0 ; delta: 0.5, 0.5
    # L = -(0.5)(-3) + 0.1*0.25  +  -(-0.5)(-0.5) + 0.1*0.25 = 1.5 + 0.025 - 0.25 + 0.025 = 1.3
    assert mirror_descent_loss(logp, ref, mask, adv, tau).item() == pytest.approx(1.3)


def test_gradient_equals_squared_surrogate():
    """d/dθ of the implemented loss == d/dθ of the paper's 1/(2τ)·(A − τΔ)² (k1.5 eq. 3)."""
    torch.manual_seed(0)
    N, T, tau = 6, 5, 0.3
    base = torch.randn(N, T)
    ref = torch.randn(N, T)
    mask = (torch.rand(N, T) > 0.3).float()
    adv = torch.randn(N)
    a = base.clone().requires_grad_(True)
    mirror_descent_loss(a, ref, mask, adv, tau).backward()
    b = base.clone().requires_grad_(True)
    delta = (b * mask).sum(-1) - (ref * mask).sum(-1)
    (1 / (2 * tau) * (adv - tau * delta).pow(2)).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_first_step_is_reinforce_with_mean_baseline():
    logp = torch.randn(4, 3, requires_grad=True)
    mask = torch.ones(4, 3)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    mirror_descent_loss(logp, logp.detach(), mask, adv, tau=5.0).backward()
    torch.testing.assert_close(logp.grad, -adv[:, None].expand(4, 3))


def test_token_mean_weighs_every_response_the_same():
    logp = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    ref = logp.detach() - 0.1  # Δ = 0.1 · length before the mean, 0.1 after it
    adv = torch.tensor([1.0, -1.0])
    mirror_descent_loss(logp, ref, mask, adv, tau=2.0, token_mean=True).backward()
    # d/dlogp_t of −A·mean + τ/2·(mean − mean_ref)² = (−A + τ·0.1) / |y| on every loss token
    expected = torch.tensor([[(-1.0 + 0.2) / 4] * 4, [(1.0 + 0.2), 0.0, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, expected)


def test_masked_tokens_get_no_gradient():
    logp = torch.randn(3, 4, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float)
    for name in ("mirror_descent", "rest", "grpo"):
        algo = get_algorithm(name)
        logp.grad = None
        algo.loss(logp, torch.randn(3, 4), mask, torch.tensor([1.0, 0.5, -1.0]), tau=0.1, clip_eps=0.2).backward()
        assert (logp.grad[mask == 0] == 0).all(), name


def test_reference_loop_matches():
    torch.manual_seed(1)
    N, T, tau = 5, 7, 0.05
    logp, ref = torch.randn(N, T), torch.randn(N, T)
    mask = (torch.rand(N, T) > 0.2).float()
    adv = torch.randn(N)
    total = 0.0
    for j in range(N):
        s = sum(float(logp[j, t]) for t in range(T) if mask[j, t])
        r = sum(float(ref[j, t]) for t in range(T) if mask[j, t])
        total += -float(adv[j]) * s + tau / 2 * (s - r) ** 2
    assert mirror_descent_loss(logp, ref, mask, adv, tau).item() == pytest.approx(total, rel=1e-5)


def test_baselines():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(mean_baseline(r), torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4]))
    n = normalized_baseline(r)
    assert n[0, 0].item() == pytest.approx(0.5 / (0.5 + 1e-4))
    assert (n[1] == 0).all()
    # batch: one std over all 8 rewards (2 of 8 ones: sqrt(2/8 * 6/8)); every group shares it
    b = scaled_baseline(r, "batch")
    torch.testing.assert_close(b, mean_baseline(r) / ((2 / 8 * 6 / 8) ** 0.5 + 1e-4))
    torch.testing.assert_close(scaled_baseline(r, "none"), mean_baseline(r))
    torch.testing.assert_close(scaled_baseline(r, "group"), n)
    w = best_correct_weights(torch.tensor([[1.0, 1.2, 0.3], [0.0, 0.0, 0.0]]),
                             torch.tensor([[True, True, False], [False, False, False]]))
    torch.testing.assert_close(w, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))


def test_grpo_clip():
    logp = torch.tensor([[math.log(2.0)]])  # ratio 2 vs old 0
    old = torch.zeros(1, 1)
    mask = torch.ones(1, 1)
    assert clipped_ratio_loss(logp, old, mask, torch.tensor([1.0]), 0.2).item() == pytest.approx(-1.2)
    assert clipped_ratio_loss(logp, old, mask, torch.tensor([-1.0]), 0.2).item() == pytest.approx(2.0)


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="choose from"):
        get_algorithm("ppo")
