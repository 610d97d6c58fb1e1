"""Policy losses and baselines: pure functions of tensors (STYLE §1–3).

Shapes: ``N`` sequences, ``T`` response positions (right-padded). ``logp``, ``ref_logp`` and
``mask`` are ``[N, T]``: per-token log-probs under the current parameters θ, under π_i (the
iterate this iteration started from, recorded once before the first update), and 1.0 where the
token is in the loss. ``advantages`` is ``[N]``.

Every loss returns the **sum** of per-sequence losses. The caller divides by one denominator
computed for the whole batch before the micro-batch loop (``sequences × horizon``), so the
gradient does not depend on how the batch is split into micro-batches or workers.
"""

from __future__ import annotations

import torch


def sequence_logprob(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log π(y|x) = Σ_t mask_t · log π(y_t | x, y_<t): ``[N, T] -> [N]`` (k1.5 eq. 3 is sequence level).

    Summed in float64: a float32 sum over hundreds of tokens rounds differently with the padded
    length, and log π_θ and log π_i must give the same sum for the same values (Δ = 0 at the first
    step) however the batch was cut.
    """
    return (logp.double() * mask).sum(dim=-1)


def mirror_descent_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                        advantages: torch.Tensor, tau: float, token_mean: bool = False) -> torch.Tensor:
    """Kimi k1.5 online mirror descent (§2.3.2, eq. 3), summed over sequences::

        L = Σ_j [ −A_j · log π_θ(y_j|x) + τ/2 · (log π_θ(y_j|x) − log π_i(y_j|x))² ]

    with sequence-level log-probs and A_j = r_j − mean(r) of the group. Its gradient equals that
    of the paper's squared surrogate 1/(2τ)·(A_j − τ·Δ_j)², Δ_j = log π_θ − log π_i, up to the
    constant A²/(2τ) (whose gradient is 0). At the first step of an iteration Δ = 0 and this is
    REINFORCE with a mean baseline; the τ term pulls later steps back toward π_i.

    Departure from the paper: none in the loss. The batch denominator may include a fixed horizon
    H (``rl.horizon``), which rescales the learning rate only. ``token_mean`` (an ablation, off in
    k1.5) divides both sequence log-probs by the response length, GRPO's per-sequence token mean, so
    that every response weighs the same whatever its length. Which responses enter the sum is the
    trainer's choice: with ``rl.mask_truncated`` (on in the quickstart preset) those cut at the length
    cap are left out, each response kept keeping the advantage the unmasked form gives it
    (:meth:`longrl.train.rl.Trainer.baseline`; ``rl.mask_truncated_baseline`` re-centres them with
    :func:`mean_baseline`'s ``mask``).
    """
    seq = sequence_logprob(logp, mask)
    ref = sequence_logprob(ref_logp, mask)
    if token_mean:
        lengths = mask.sum(dim=-1).clamp(min=1)
        seq, ref = seq / lengths, ref / lengths
    delta = seq - ref
    return (-advantages * seq + 0.5 * tau * delta.pow(2)).sum()


def weighted_nll_loss(logp: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ReST / rejection-sampling fine-tuning: Σ_j −w_j · log π_θ(y_j|x) with w ≥ 0 (no negative gradient)."""
    return (-weights * sequence_logprob(logp, mask)).sum()


def clipped_ratio_loss(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor,
                       advantages: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """GRPO's clipped surrogate without a KL term (β = 0), token-mean per sequence, summed::

        L = Σ_j 1/|y_j| Σ_t −min(ρ_t A_j, clip(ρ_t, 1−ε, 1+ε) A_j),   ρ_t = π_θ(y_t)/π_old(y_t)
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    lengths = mask.sum(dim=-1).clamp(min=1)
    return ((per_token * mask).sum(dim=-1) / lengths).sum()


# ----------------------------------------------------------------------------- baselines


def mean_baseline(rewards: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """k1.5 baseline: A_j = r_j − mean_k(r) per group. ``rewards`` ``[G, k] -> [G, k]``. No std division.

    ``mask`` (bool ``[G, k]``, optional) marks the responses that enter the loss: the mean is taken
    over those only and the others get A = 0, so the advantages in the loss sum to zero in every
    group (a group with none in the loss gets zeros).

    >>> mean_baseline(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.tensor([[True, True, False, False]])).tolist()
    [[0.5, -0.5, 0.0, 0.0]]
    """
    if mask is None:
        return rewards - rewards.mean(dim=-1, keepdim=True)
    m = mask.to(rewards.dtype)
    mean = (rewards * m).sum(dim=-1, keepdim=True) / m.sum(dim=-1, keepdim=True).clamp(min=1)
    return (rewards - mean) * m


def _masked_std(rewards: torch.Tensor, mask: torch.Tensor | None, dim: int | None) -> torch.Tensor:
    """Population std of ``rewards`` over ``mask`` (all when None), per group (``dim=-1``) or overall."""
    if mask is None:
        return rewards.std(unbiased=False) if dim is None else rewards.std(dim=dim, unbiased=False, keepdim=True)
    m = mask.to(rewards.dtype)
    keep = dim is not None
    n = m.sum(dim=dim, keepdim=keep) if keep else m.sum()
    n = n.clamp(min=1)
    mean = ((rewards * m).sum(dim=dim, keepdim=keep) if keep else (rewards * m).sum()) / n
    sq = ((rewards - mean) ** 2) * m
    return ((sq.sum(dim=dim, keepdim=keep) if keep else sq.sum()) / n).sqrt()


def normalized_baseline(rewards: torch.Tensor, eps: float = 1e-4, over: str = "group",
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """GRPO: A_j = (r_j − mean) / (std + eps), the population std of the group (``over="group"``)
    or of every reward in the batch (``over="batch"``, TRL's ``scale_rewards="batch"``); with
    ``mask``, mean and std are over the responses in the loss (see :func:`mean_baseline`)."""
    centered = mean_baseline(rewards, mask)
    return centered / (_masked_std(rewards, mask, None if over == "batch" else -1) + eps)


def scaled_baseline(rewards: torch.Tensor, scale: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The group-mean baseline, then divided by a std per ``scale``: none (k1.5), group (GRPO) or batch."""
    return mean_baseline(rewards, mask) if scale == "none" else normalized_baseline(rewards, over=scale, mask=mask)


def best_correct_weights(rewards: torch.Tensor, correct: torch.Tensor,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """ReST: weight 1 on the best-rewarded correct sample of each group (first on ties), 0 elsewhere.

    ``rewards`` float ``[G, k]``, ``correct`` bool ``[G, k]``, ``mask`` bool ``[G, k]`` (optional:
    only responses in the loss are candidates). A group with no correct candidate gets no weight.
    """
    if mask is not None:
        correct = correct & mask
    masked = rewards.masked_fill(~correct, float("-inf"))
    best = masked.argmax(dim=-1)
    w = torch.zeros_like(rewards)
    w[torch.arange(rewards.shape[0]), best] = 1.0
    return w * correct.any(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------- preferences


def dpo_loss(chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
             ref_rejected_logp: torch.Tensor, beta: float, nll_weight: float = 0.0,
             chosen_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Direct preference optimisation (Rafailov et al. 2023), summed over P pairs::

        L = Σ_p −log σ( β · [ (log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x)) ] )
            + α · Σ_p −log π_θ(y_w|x) / |y_w|

    All four inputs are sequence-level log-probs ``[P]`` (sums over response tokens, as
    :func:`sequence_logprob` gives); y_w is the chosen, y_l the rejected response. The gradient
    raises log π_θ(y_w) and lowers log π_θ(y_l), each by β·σ(−margin). long2short (k1.5 §2.4)
    uses it with y_w the shortest correct sample and y_l a wrong or ≥ 1.5× longer one.

    The second term (``nll_weight`` α > 0, with ``chosen_tokens`` = |y_w| per pair) is the chosen
    response's per-token negative log-likelihood, each pair's own mean, as in RPO (Pang et al.
    2024); TRL's ``rpo_alpha`` instead averages over all chosen tokens of a batch, so its long
    responses count more. DPO alone can raise the margin while lowering both log-probs, pushing
    mass to responses that are in neither; the NLL term keeps the chosen one likely.
    """
    margin = beta * ((chosen_logp - ref_chosen_logp) - (rejected_logp - ref_rejected_logp))
    loss = -torch.nn.functional.logsigmoid(margin).sum()
    if nll_weight:
        if chosen_tokens is None:
            raise ValueError("dpo_loss: nll_weight needs chosen_tokens")
        loss = loss + nll_weight * (-chosen_logp / chosen_tokens).sum()
    return loss
