"""Length penalty (Kimi k1.5 §2.3.3, DESIGN §3).

RL on long chain-of-thought makes responses grow ("overthinking"). k1.5 adds a length reward,
computed per prompt group of k responses, that favours the shorter correct responses and
penalises long wrong ones; it is switched on after a warm-up because applying it from the start
slows training (k1.5 §2.3.3: "we adopt a warm-up phase").

Statistics are per prompt group, never across prompts: a hard prompt needs long answers and must
not be penalised against an easy one.
"""

from __future__ import annotations

from collections.abc import Sequence


def length_rewards(lengths: Sequence[int], correct: Sequence[bool]) -> list[float]:
    """Length reward of each response in ONE prompt group (k1.5 §2.3.3, DESIGN §3).

    With ``len_j`` the response length in tokens, ``min_len``/``max_len`` over the group::

        λ_j = 0.5 − (len_j − min_len) / (max_len − min_len)
        len_reward_j = λ_j            if response j is correct
                     = min(0, λ_j)    if it is wrong

    and every ``len_reward_j = 0`` when ``max_len == min_len`` (no length signal). λ runs from
    +0.5 (the shortest response) to −0.5 (the longest), so a wrong response is never rewarded
    for being short: only its penalty for being long survives the ``min(0, ·)``.

    Args:
        lengths: k response lengths in tokens, shape (k,).
        correct: k verdicts from the task verifier, shape (k,), aligned with ``lengths``.

    Returns:
        k floats in [−0.5, 0.5], to be scaled by :func:`length_penalty_weight` and added to the
        task reward before the group baseline.

    >>> length_rewards([10, 20, 30], [True, True, False])
    [0.5, 0.0, -0.5]
    >>> length_rewards([10, 30], [False, True])
    [0.0, -0.5]
    >>> length_rewards([7, 7], [True, False])
    [0.0, 0.0]
    """
    if len(lengths) != len(correct):
        raise ValueError(f"{len(lengths)} lengths but {len(correct)} verdicts")
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(lengths)
    out = []
    for n, ok in zip(lengths, correct):
        lam = 0.5 - (n - lo) / (hi - lo)
        out.append(float(lam) if ok else float(min(0.0, lam)))
    return out


def length_penalty_weight(iteration: int, weight: float, warmup_iters: int) -> float:
    """Weight w_len of the length reward at RL ``iteration`` (0-based; k1.5 §2.3.3, DESIGN §3).

    ``w_len = 0`` while ``iteration < warmup_iters``, then the constant ``weight``. The paper
    turns the penalty on only after a warm-up because an early length penalty slows the
    learning of the task itself; it does not decay or ramp it, so neither do we.

    >>> [length_penalty_weight(i, 0.5, warmup_iters=2) for i in range(4)]
    [0.0, 0.0, 0.5, 0.5]
    """
    if warmup_iters < 0:
        raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")
    return 0.0 if iteration < warmup_iters else float(weight)
