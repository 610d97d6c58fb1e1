"""Prompt sampler (k1.5 §2.3.4, DESIGN §4): curriculum, prioritized weights, determinism, resume."""

from __future__ import annotations

import doctest
import json
from collections import Counter

import numpy as np
import pytest

import longrl.sampling as sampling_mod
from longrl.sampling import STRATEGIES, PromptSampler, priority_weights
from longrl.types import Prompt

IDS = [f"p{i}" for i in range(10)]
DIFFS = [i / 9 for i in range(10)]  # levels 1..10 -> (L-1)/9


def make(strategy="uniform", **kw):
    return PromptSampler(ids=IDS, difficulties=DIFFS, strategy=strategy, **kw)


def test_from_prompts_equals_from_lists():
    prompts = [Prompt(id=i, text="", reference=None, task="t", difficulty=d) for i, d in zip(IDS, DIFFS)]
    a = PromptSampler(prompts, strategy="curriculum+prioritized", seed=3, curriculum_warmup_iters=2)
    b = make("curriculum+prioritized", seed=3, curriculum_warmup_iters=2)
    assert [a.sample(4, it) for it in range(5)] == [b.sample(4, it) for it in range(5)]


def test_bad_strategy_names_the_valid_ones():
    with pytest.raises(ValueError) as e:
        make("hardest-first")
    for name in STRATEGIES:
        assert name in str(e.value)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"hard_threshold": 1.5}, "hard_threshold"),
        ({"eps": -0.1}, "eps"),
        ({"curriculum_warmup_iters": -1}, "curriculum_warmup_iters"),
        ({"initial_success": {"nope": 0.5}}, "nope"),
        ({"initial_success": {"p0": 2.0}}, "p0"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        make("prioritized", **kw)


def test_bad_prompt_lists():
    with pytest.raises(ValueError, match="duplicate"):
        PromptSampler(ids=["a", "a"], difficulties=[0, 0])
    with pytest.raises(ValueError, match="2 ids but 1"):
        PromptSampler(ids=["a", "b"], difficulties=[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PromptSampler(ids=["a"], difficulties=[1.2])
    with pytest.raises(ValueError, match="at least one"):
        PromptSampler(ids=[], difficulties=[])


def test_curriculum_without_hard_prompts_fails_at_construction():
    with pytest.raises(ValueError, match="hard_threshold=0.95"):
        PromptSampler(ids=["a", "b"], difficulties=[0.1, 0.9], strategy="curriculum", hard_threshold=0.95)
    # the same prompt set is fine without a curriculum
    PromptSampler(ids=["a", "b"], difficulties=[0.1, 0.9], strategy="prioritized", hard_threshold=0.95)


def test_curriculum_switches_at_warmup():
    s = make("curriculum", curriculum_warmup_iters=3, hard_threshold=0.5, seed=1)
    hard = {pid for pid, d in zip(IDS, DIFFS) if d >= 0.5}
    assert hard == {"p5", "p6", "p7", "p8", "p9"}
    for it in range(3):  # warm-up: the whole set, and easy prompts do come up
        assert sorted(s.sample(10, it)) == IDS
        assert set(s.probabilities(it)) == set(IDS)
    for it in range(3, 20):
        draw = s.sample(5, it)
        assert sorted(draw) == sorted(hard)  # 5 hard prompts, 5 draws, without replacement
        assert set(s.probabilities(it)) == hard
    # with replacement once the batch is larger than the hard pool
    big = s.sample(12, 20)
    assert len(big) == 12 and set(big) <= hard


def test_without_replacement_within_a_call():
    s = make("prioritized", seed=0)
    for it in range(50):
        draw = s.sample(7, it)
        assert len(set(draw)) == 7
    assert len(s.sample(25, 50)) == 25  # more than the pool: with replacement, no error
    assert s.sample(0, 51) == []


def test_priority_formula():
    assert priority_weights(np.array([0.0, 0.25, 1.0]), eps=0.05) == pytest.approx([1.05, 0.8, 0.05])
    s = make("prioritized", eps=0.1, initial_success={"p1": 0.5})
    s.update("p0", successes=3, total=4)  # s = 0.75
    s.update("p0", successes=1, total=4)  # cumulative: 4 / 8 = 0.5
    s.update("p2", successes=8, total=8)  # solved: weight ε only
    s.update("p1", successes=0, total=4)  # seen: the initial 0.5 no longer counts
    rates = {pid: s.success_rate(pid) for pid in IDS}
    assert rates["p0"] == 0.5 and rates["p1"] == 0.0 and rates["p2"] == 1.0 and rates["p3"] == 0.0
    w = {pid: (1 - r) + 0.1 for pid, r in rates.items()}
    z = sum(w.values())
    probs = s.probabilities(0)
    for pid in IDS:
        assert probs[pid] == pytest.approx(w[pid] / z)


def test_unseen_prompt_uses_initial_rate():
    s = make("prioritized", eps=0.1, initial_success={"p3": 0.9})
    assert s.success_rate("p3") == 0.9 and s.success_rate("p4") == 0.0
    p = s.probabilities(0)
    assert p["p3"] / p["p4"] == pytest.approx((0.1 + 0.1) / (1.0 + 0.1))


def test_prioritized_empirical_distribution_matches_formula():
    s = make("prioritized", eps=0.05, seed=7)
    for i, pid in enumerate(IDS):
        s.update(pid, successes=i, total=9)  # s_i = i/9: weights from 1.05 down to 0.05
    expected = s.probabilities(0)
    n = 40_000
    counts = Counter(s.sample(n, 0))  # n > pool: independent draws with replacement
    for pid in IDS:
        p = expected[pid]
        # 5 standard errors of a binomial proportion: a false alarm is ~1e-6 per prompt
        assert abs(counts[pid] / n - p) < 5 * np.sqrt(p * (1 - p) / n), pid
    # single draws per call follow the same law
    single = Counter(s.sample(1, it)[0] for it in range(8_000))
    assert single["p0"] > 10 * single["p9"]  # weight 1.05 vs 0.05


def test_curriculum_plus_prioritized_restricts_then_weights():
    s = make("curriculum+prioritized", curriculum_warmup_iters=0, hard_threshold=0.5, eps=0.0)
    for pid in ["p5", "p6", "p7"]:
        s.update(pid, 4, 4)  # solved, ε = 0: never drawn
    assert set(s.probabilities(0)) == {"p5", "p6", "p7", "p8", "p9"}
    for it in range(20):
        assert sorted(s.sample(2, it)) == ["p8", "p9"]
    # a batch larger than the prompts with positive weight falls back to with-replacement draws
    assert set(s.sample(5, 20)) == {"p8", "p9"}
    for pid in ["p8", "p9"]:
        s.update(pid, 4, 4)
    # every eligible prompt solved and ε = 0: uniform over the pool rather than a stall
    assert list(s.probabilities(0).values()) == pytest.approx([0.2] * 5)


def test_deterministic_from_seed():
    draws = []
    for _ in range(2):
        s = make("prioritized", seed=123)
        run = []
        for it in range(10):
            batch = s.sample(4, it)
            run.append(batch)
            for pid in batch:
                s.update(pid, successes=int(pid[1:]) % 3, total=4)
        draws.append(run)
    assert draws[0] == draws[1]
    other = make("prioritized", seed=124)
    assert [other.sample(4, it) for it in range(10)] != draws[0]


def _step(s, it):
    batch = s.sample(3, it)
    for pid in batch:
        s.update(pid, successes=(int(pid[1:]) + it) % 5, total=4 if int(pid[1:]) % 2 else 8)
    return batch


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_state_round_trip_reproduces_future_draws(strategy):
    kw = {"seed": 5, "curriculum_warmup_iters": 4, "hard_threshold": 0.3, "initial_success": {"p2": 0.4}}
    whole = make(strategy, **kw)
    expected = [_step(whole, it) for it in range(12)]

    first = make(strategy, **kw)
    assert [_step(first, it) for it in range(6)] == expected[:6]
    saved = json.loads(json.dumps(first.state_dict()))  # through JSON, as in a checkpoint
    resumed = make(strategy, **{**kw, "seed": 999})  # a fresh sampler; its own seed is overwritten
    resumed.load_state_dict(saved)
    assert resumed.stats() == first.stats()
    assert [_step(resumed, it) for it in range(6, 12)] == expected[6:]


def test_load_state_rejects_foreign_prompt_ids():
    s = make("prioritized")
    s.update("p1", 1, 2)
    state = s.state_dict()
    other = PromptSampler(ids=["x", "y"], difficulties=[0, 1], strategy="prioritized")
    with pytest.raises(ValueError, match="p1"):
        other.load_state_dict(state)


def test_update_validation_and_stats():
    s = make("prioritized")
    assert s.stats() == {"sampler/prompts_seen": 0, "sampler/responses": 0}
    with pytest.raises(KeyError):
        s.update("nope", 1, 2)
    with pytest.raises(ValueError):
        s.update("p0", 3, 2)
    s.update("p0", 2, 4)
    s.update("p1", 4, 4)
    assert s.stats() == {
        "sampler/prompts_seen": 2,
        "sampler/responses": 8,
        "sampler/mean_success": 0.75,
        "sampler/solved_frac": 0.5,
    }
    json.dumps(s.stats())


def test_docstring_examples_run():
    result = doctest.testmod(sampling_mod)
    assert result.attempted >= 5 and result.failed == 0


def test_exclude_skips_prompts_in_flight_and_falls_back_when_all_left_weigh_zero():
    """``exclude`` (groups waiting in the replay buffer) is never drawn while something else is eligible.
    With eps 0 and every prompt left solved (weight 0), the draw is uniform over those left, not a
    division by zero; when everything is excluded, the excluded ones are drawn after all."""
    s = make("prioritized", seed=2, eps=0.0)
    for pid in IDS[3:]:
        s.update(pid, 4, 4)  # solved: weight 0
    busy = set(IDS[:3])  # the only prompts with weight > 0 wait in the buffer
    draws = [pid for it in range(20) for pid in s.sample(2, it, exclude=busy)]
    assert not busy & set(draws)
    assert set(draws) <= set(IDS[3:]) and len(set(draws)) > 3
    s2 = make("uniform", seed=2)
    assert set(s2.sample(5, 0, exclude={"p0", "p1"})).isdisjoint({"p0", "p1"})
    assert len(s2.sample(3, 0, exclude=set(IDS))) == 3
