"""Update rules by name: one registry, no caller bypasses it (STYLE §4).

An :class:`Algorithm` is a baseline (group rewards -> per-sample advantages or weights) and a loss
(tensors -> summed loss). The trainer only ever calls ``get_algorithm(cfg.rl.algorithm)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from longrl.algo import losses


@dataclass(frozen=True)
class Algorithm:
    name: str
    # (rewards [G,k], correct [G,k], scale, kept [G,k] or None) -> advantages [G,k]; scale is rl.scale_rewards
    # or scale_rewards; with kept (rl.mask_truncated_baseline) the mean is over the kept responses, others get 0
    advantages: Callable[[torch.Tensor, torch.Tensor, str, torch.Tensor | None], torch.Tensor]
    # (logp, ref_logp, mask, advantages, tau, clip_eps, token_mean) -> summed loss
    loss: Callable[..., torch.Tensor]
    uses_ref: bool = True  # its loss reads log pi_i (recorded or recomputed before the first update)
    per_sequence_horizon: bool = True  # its loss sums over tokens, so the batch denominator includes the
    # horizon H; False where the loss is already a per-sequence token mean (grpo)
    scale_rewards: str | None = None  # the std the advantages are divided by unless rl.scale_rewards says
    # otherwise: none, group or batch; None where the advantages are weights (rest)


def _md_loss(logp, ref_logp, mask, adv, *, tau, clip_eps, token_mean=False):
    return losses.mirror_descent_loss(logp, ref_logp, mask, adv, tau, token_mean)


def _rest_loss(logp, ref_logp, mask, adv, *, tau, clip_eps, token_mean=False):
    return losses.weighted_nll_loss(logp, mask, adv)


def _grpo_loss(logp, ref_logp, mask, adv, *, tau, clip_eps, token_mean=False):  # token_mean: mirror_descent only;
    # the clipped surrogate already averages over each response's tokens
    return losses.clipped_ratio_loss(logp, ref_logp, mask, adv, clip_eps)


_ALGORITHMS = {
    a.name: a
    for a in (
        Algorithm("mirror_descent", lambda r, c, scale, m=None: losses.scaled_baseline(r, scale, m), _md_loss,
                  scale_rewards="none"),
        Algorithm("rest", lambda r, c, scale, m=None: losses.best_correct_weights(r, c, m), _rest_loss,
                  uses_ref=False),
        Algorithm("grpo", lambda r, c, scale, m=None: losses.scaled_baseline(r, scale, m), _grpo_loss,
                  scale_rewards="group", per_sequence_horizon=False),
    )
}


def algorithm_names() -> list[str]:
    return sorted(_ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    if name not in _ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose from {algorithm_names()}")
    return _ALGORITHMS[name]
