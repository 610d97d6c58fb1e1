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
    # (rewards [G,k], correct [G,k]) -> advantages [G,k]
    advantages: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # (logp, ref_logp, mask, advantages, tau, clip_eps) -> summed loss
    loss: Callable[..., torch.Tensor]
    uses_ref: bool = True  # needs log pi_i recorded before the first update


def _md_loss(logp, ref_logp, mask, adv, *, tau, clip_eps):
    return losses.mirror_descent_loss(logp, ref_logp, mask, adv, tau)


def _rest_loss(logp, ref_logp, mask, adv, *, tau, clip_eps):
    return losses.weighted_nll_loss(logp, mask, adv)


def _grpo_loss(logp, ref_logp, mask, adv, *, tau, clip_eps):
    return losses.clipped_ratio_loss(logp, ref_logp, mask, adv, clip_eps)


_ALGORITHMS = {
    a.name: a
    for a in (
        Algorithm("mirror_descent", lambda r, c: losses.mean_baseline(r), _md_loss),
        Algorithm("rest", losses.best_correct_weights, _rest_loss, uses_ref=False),
        Algorithm("grpo", lambda r, c: losses.normalized_baseline(r), _grpo_loss),
    )
}


def algorithm_names() -> list[str]:
    return sorted(_ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    if name not in _ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose from {algorithm_names()}")
    return _ALGORITHMS[name]
