"""Which prompts each RL iteration trains on (Kimi k1.5 §2.3.4, DESIGN §4).

Two strategies from the paper, usable alone or together:

- **Curriculum.** Train on all prompts for ``curriculum_warmup_iters`` iterations, then only on
  prompts with ``difficulty >= hard_threshold``. The paper's ablation (k1.5 §2.3.4, fig. 9)
  starts with easier tasks and moves to hard ones; difficulty comes with the data (levels) or from
  curation (1 − pass rate), already on the [0, 1] scale of :class:`~longrl.types.Prompt`.
- **Prioritized.** Sample prompt i with probability ``P(i) ∝ (1 − s_i) + ε``, where ``s_i`` is
  the running success rate of prompt i over all its sampled responses, so that the model spends
  its rollouts on what it still fails. ``ε > 0`` keeps solved prompts in the pool.

Departures from the paper, in one paragraph: the paper does not say what ``s_i`` is before a
prompt has been tried; here it is the curation pass rate when one is given and 0 otherwise
(an unseen prompt gets the top weight, 1 + ε, so every prompt is tried early). ``s_i`` is
cumulative over the whole run (all successes / all responses), not a moving window — it is what
"success rate" says and it survives a resume exactly. Within one :meth:`PromptSampler.sample`
call, prompts are drawn without replacement whenever the eligible pool is large enough, so a
batch of B prompts holds B distinct prompts; this flattens the per-batch inclusion probabilities
toward uniform when B is a large share of the pool (each single draw still follows P(i)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from longrl.types import Prompt

STRATEGIES = ("uniform", "curriculum", "prioritized", "curriculum+prioritized")
_STATE_VERSION = 1


def priority_weights(success_rates: np.ndarray, eps: float) -> np.ndarray:
    """Unnormalised prioritized-sampling weights (k1.5 §2.3.4): ``w_i = (1 − s_i) + ε``.

    Args:
        success_rates: shape (n,), each ``s_i`` in [0, 1].
        eps: ε >= 0, the floor that keeps solved prompts (``s_i = 1``) sampleable.

    Returns:
        shape (n,) float64 weights; ``P(i) = w_i / Σ w``.

    >>> priority_weights(np.array([0.0, 0.5, 1.0]), eps=0.1).tolist()
    [1.1, 0.6, 0.1]
    """
    return (1.0 - np.asarray(success_rates, dtype=np.float64)) + eps


class PromptSampler:
    """Draws prompt ids for each RL iteration; deterministic given its seed (DESIGN §4).

    Build it from prompts or from parallel lists of ids and difficulties::

        >>> s = PromptSampler(ids=["a", "b", "c"], difficulties=[0.0, 0.5, 1.0],
        ...                   strategy="curriculum", curriculum_warmup_iters=1, hard_threshold=0.5)
        >>> sorted(s.sample(3, iteration=0))   # warm-up: every prompt
        ['a', 'b', 'c']
        >>> sorted(s.sample(2, iteration=1))   # then only difficulty >= 0.5
        ['b', 'c']
        >>> s.update("b", successes=3, total=4)
        >>> s.success_rate("b")
        0.75

    The trainer calls :meth:`sample` once per iteration, :meth:`update` once per finished prompt
    group (successes among its k responses), and saves :meth:`state_dict` in the checkpoint.
    """

    def __init__(
        self,
        prompts: Sequence[Prompt] | None = None,
        *,
        ids: Sequence[str] | None = None,
        difficulties: Sequence[float] | None = None,
        strategy: str = "uniform",
        seed: int = 0,
        curriculum_warmup_iters: int = 0,  # iterations on all prompts before the hard-only phase
        hard_threshold: float = 0.5,  # difficulty in [0, 1] at or above which a prompt is "hard"
        eps: float = 0.1,  # prioritized ε: weight floor of a fully solved prompt
        initial_success: Mapping[str, float] | None = None,  # prompt id -> curation pass rate
    ):
        if prompts is not None:
            if ids is not None or difficulties is not None:
                raise ValueError("give either prompts or (ids, difficulties), not both")
            ids = [p.id for p in prompts]
            difficulties = [p.difficulty for p in prompts]
        if ids is None or difficulties is None:
            raise ValueError("give prompts, or both ids and difficulties")
        if len(ids) != len(difficulties):
            raise ValueError(f"{len(ids)} ids but {len(difficulties)} difficulties")
        if not ids:
            raise ValueError("the sampler needs at least one prompt")
        self.ids: list[str] = [str(i) for i in ids]
        self._index = {pid: i for i, pid in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            dup = sorted({p for p in self.ids if self.ids.count(p) > 1})[:5]
            raise ValueError(f"duplicate prompt ids: {dup}")
        self.difficulties = np.asarray(difficulties, dtype=np.float64)
        bad = [self.ids[i] for i in np.flatnonzero(~((self.difficulties >= 0) & (self.difficulties <= 1)))]
        if bad:
            raise ValueError(f"difficulty must be in [0, 1]; prompts {bad[:5]} are not")

        if strategy not in STRATEGIES:
            raise ValueError(f"unknown sampling strategy {strategy!r}; choose from {list(STRATEGIES)}")
        if not 0.0 <= hard_threshold <= 1.0:
            raise ValueError(f"hard_threshold must be in [0, 1] (the difficulty scale), got {hard_threshold}")
        if curriculum_warmup_iters < 0:
            raise ValueError(f"curriculum_warmup_iters must be >= 0, got {curriculum_warmup_iters}")
        if not (eps >= 0.0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        self.strategy = strategy
        self.seed = int(seed)
        self.curriculum_warmup_iters = int(curriculum_warmup_iters)
        self.hard_threshold = float(hard_threshold)
        self.eps = float(eps)
        self._curriculum = strategy.startswith("curriculum")
        self._prioritized = strategy.endswith("prioritized")
        self._hard = self.difficulties >= self.hard_threshold
        if self._curriculum and not self._hard.any():
            raise ValueError(
                f"curriculum: no prompt has difficulty >= hard_threshold={self.hard_threshold} "
                f"(max difficulty {self.difficulties.max():g}); lower the threshold or add harder prompts"
            )

        n = len(self.ids)
        self._initial = np.zeros(n)
        for pid, rate in (initial_success or {}).items():
            if pid not in self._index:
                raise ValueError(f"initial_success names unknown prompt id {pid!r}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"initial success rate of {pid!r} must be in [0, 1], got {rate}")
            self._initial[self._index[pid]] = rate
        self._successes = np.zeros(n, dtype=np.int64)
        self._totals = np.zeros(n, dtype=np.int64)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))

    # ---- drawing -------------------------------------------------------------------------------

    def success_rates(self) -> np.ndarray:
        """``s_i`` for every prompt, shape (n,): successes / responses, or the initial rate if unseen."""
        seen = self._totals > 0
        return np.where(seen, self._successes / np.maximum(self._totals, 1), self._initial)

    def _pool(self, iteration: int) -> np.ndarray:
        """Indices of the prompts eligible at ``iteration`` (the curriculum phase)."""
        if self._curriculum and iteration >= self.curriculum_warmup_iters:
            return np.flatnonzero(self._hard)
        return np.arange(len(self.ids))

    def probabilities(self, iteration: int) -> dict[str, float]:
        """P(i) of a single draw at ``iteration``, for every eligible prompt (ids in input order).

        Uniform over the pool, or ``((1 − s_i) + ε) / Σ`` when prioritized. If every weight is 0
        (ε = 0 and every eligible prompt solved) it falls back to uniform rather than stall.
        """
        pool = self._pool(iteration)
        if self._prioritized:
            w = priority_weights(self.success_rates()[pool], self.eps)
        else:
            w = np.ones(len(pool))
        if w.sum() <= 0:
            w = np.ones(len(pool))
        p = w / w.sum()
        return {self.ids[i]: float(q) for i, q in zip(pool, p)}

    def sample(self, n: int, iteration: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Draw ``n`` prompt ids for RL ``iteration`` (0-based).

        Without replacement when at least ``n`` eligible prompts have positive probability (a
        batch of distinct prompts), with replacement otherwise. Advances the sampler's RNG.
        ``exclude`` (prompts whose groups are still in the replay buffer) are not drawn, unless
        they are all that is eligible.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        probs = self.probabilities(iteration)
        if exclude and any(i not in exclude for i in probs):  # prompts still in flight (partial rollouts)
            left = {i: q for i, q in probs.items() if i not in exclude}
            total = sum(left.values())
            # every prompt left may have weight 0 (eps 0, all solved) while the weighted ones wait in
            # the buffer: fall back to uniform over those left, as probabilities() does
            probs = {i: q / total for i, q in left.items()} if total > 0 else dict.fromkeys(left, 1 / len(left))
        ids = list(probs)
        p = np.fromiter(probs.values(), dtype=np.float64, count=len(ids))
        if n == 0:
            return []
        replace = n > int(np.count_nonzero(p))
        picks = self._rng.choice(len(ids), size=n, replace=replace, p=p)
        return [ids[i] for i in picks]

    # ---- statistics ----------------------------------------------------------------------------

    def update(self, prompt_id: str, successes: int, total: int) -> None:
        """Add one group's outcome: ``successes`` correct responses out of ``total`` sampled.

        Counts are cumulative over the run, so ``s_i`` is the success rate over every response
        prompt i has had; the initial (curation) rate stops counting once a prompt is seen.
        """
        if prompt_id not in self._index:
            raise KeyError(f"unknown prompt id {prompt_id!r}")
        if not (0 <= successes <= total):
            raise ValueError(f"need 0 <= successes <= total, got successes={successes}, total={total}")
        i = self._index[prompt_id]
        self._successes[i] += int(successes)
        self._totals[i] += int(total)

    def success_rate(self, prompt_id: str) -> float:
        """``s_i`` of one prompt: its running success rate, or its initial rate (0 if none) if unseen."""
        if prompt_id not in self._index:
            raise KeyError(f"unknown prompt id {prompt_id!r}")
        return float(self.success_rates()[self._index[prompt_id]])

    def stats(self) -> dict[str, float]:
        """Summary for the metrics log (keys prefixed ``sampler/``).

        ``prompts_seen`` and ``responses`` always; ``mean_success`` (mean ``s_i`` over the seen
        prompts) and ``solved_frac`` (share of seen prompts with ``s_i = 1``) only once a prompt
        has been seen — a mean over nothing would plot as a fake 0.
        """
        seen = self._totals > 0
        out: dict[str, float] = {
            "sampler/prompts_seen": int(seen.sum()),
            "sampler/responses": int(self._totals.sum()),
        }
        if seen.any():
            rates = self._successes[seen] / self._totals[seen]
            out["sampler/mean_success"] = float(rates.mean())
            out["sampler/solved_frac"] = float((rates == 1.0).mean())
        return out

    # ---- checkpointing -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: per-prompt counts and the RNG state.

        The configuration (strategy, thresholds, prompt list) is not saved: it comes from the run
        config. Counts are keyed by prompt id, and only seen prompts are stored.
        """
        counts = {
            self.ids[i]: [int(self._successes[i]), int(self._totals[i])] for i in np.flatnonzero(self._totals)
        }
        rng = self._rng.bit_generator.state
        # PCG64's state and increment are 128-bit ints; strings keep them exact in any JSON reader.
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "counts": counts,
            "rng": {
                "bit_generator": rng["bit_generator"],
                "state": {k: str(v) for k, v in rng["state"].items()},
                "has_uint32": int(rng["has_uint32"]),
                "uinteger": int(rng["uinteger"]),
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; later draws equal those of an uninterrupted sampler."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"sampler state version {state.get('version')!r}; expected {_STATE_VERSION}")
        unknown = [pid for pid in state["counts"] if pid not in self._index]
        if unknown:
            raise ValueError(
                f"sampler state has counts for {len(unknown)} prompt ids not in this prompt set, "
                f"e.g. {unknown[:3]}; was the prompt file changed since the checkpoint?"
            )
        rng = state["rng"]
        if rng["bit_generator"] != "PCG64":
            raise ValueError(f"sampler state uses RNG {rng['bit_generator']!r}; expected 'PCG64'")
        self._successes[:] = 0
        self._totals[:] = 0
        for pid, (succ, tot) in state["counts"].items():
            self._successes[self._index[pid]] = int(succ)
            self._totals[self._index[pid]] = int(tot)
        self._rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {k: int(v) for k, v in rng["state"].items()},
            "has_uint32": int(rng["has_uint32"]),
            "uinteger": int(rng["uinteger"]),
        }
        self.seed = int(state["seed"])
