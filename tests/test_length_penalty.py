"""Length penalty (k1.5 §2.3.3): golden table, invariances, warm-up schedule."""

from __future__ import annotations

import doctest
import random

import pytest

import longrl.rewards.length as length_mod
from longrl.config import load_config
from longrl.rewards.length import length_penalty_weight, length_rewards

# (lengths, correct, expected) — each row worked out by hand from
# λ = 0.5 − (len − min)/(max − min); correct -> λ, wrong -> min(0, λ).
GOLDEN = [
    # min 10, max 30: λ = 0.5, 0.0, −0.5
    ([10, 20, 30], [True, True, True], [0.5, 0.0, -0.5]),
    ([10, 20, 30], [False, False, False], [0.0, 0.0, -0.5]),  # all wrong: nothing positive
    ([10, 20, 30], [False, True, False], [0.0, 0.0, -0.5]),
    # min 100, max 500: λ = 0.5, 0.25, −0.25, −0.5
    ([100, 200, 400, 500], [True, False, True, False], [0.5, 0.0, -0.25, -0.5]),
    # ties: the two shortest share λ = 0.5, the two longest λ = −0.5
    ([4, 4, 8, 8], [True, False, True, False], [0.5, 0.0, -0.5, -0.5]),
    ([4, 4, 8, 8], [True, True, False, False], [0.5, 0.5, -0.5, -0.5]),
    # all equal lengths: no signal whatever the verdicts
    ([7, 7, 7], [True, False, True], [0.0, 0.0, 0.0]),
    ([7], [True], [0.0]),
    # min 0, max 8: λ = 0.5, 0.25, 0.0, −0.5
    ([0, 2, 4, 8], [False, True, False, True], [0.0, 0.25, 0.0, -0.5]),
    ([], [], []),
]


@pytest.mark.parametrize("lengths,correct,expected", GOLDEN)
def test_golden_table(lengths, correct, expected):
    assert length_rewards(lengths, correct) == pytest.approx(expected, abs=1e-12)


def _reference(lengths, correct):
    # Slow, literal reading of DESIGN §3, independent of the implementation's structure.
    out = []
    for j in range(len(lengths)):
        if max(lengths) == min(lengths):
            out.append(0.0)
            continue
        lam = 0.5 - (lengths[j] - min(lengths)) / (max(lengths) - min(lengths))
        out.append(lam if correct[j] else (lam if lam < 0 else 0.0))
    return out


def _random_groups(n_groups=300, seed=0):
    rng = random.Random(seed)
    for _ in range(n_groups):
        k = rng.randint(1, 9)
        lengths = [rng.choice([rng.randint(1, 50), 10]) for _ in range(k)]  # frequent ties at 10
        correct = [rng.random() < 0.5 for _ in range(k)]
        yield lengths, correct


def test_matches_reference_on_random_groups():
    for lengths, correct in _random_groups():
        assert length_rewards(lengths, correct) == pytest.approx(_reference(lengths, correct))


def test_shortest_correct_gets_largest_bonus():
    # Among the correct responses of a group, the shortest earns the most, strictly more than any
    # longer correct one. (A wrong response can still score higher — 0 against a negative λ —
    # when even the shortest correct response is long; the bonus ranks correct answers.)
    checked = 0
    for lengths, correct in _random_groups(seed=1):
        if not any(correct) or len(set(lengths)) == 1:
            continue
        values = length_rewards(lengths, correct)
        ok_pairs = [(n, v) for n, ok, v in zip(lengths, correct, values) if ok]
        shortest = min(n for n, _ in ok_pairs)
        best = max(v for _, v in ok_pairs)
        for n, v in ok_pairs:
            assert (v == best) if n == shortest else (v < best)
        if min(lengths) == shortest:  # the shortest overall and correct: the group's maximum, +0.5
            assert best == max(values) == 0.5
        checked += 1
    assert checked > 100


def test_wrong_response_never_positive_and_range():
    for lengths, correct in _random_groups(seed=2):
        for ok, v in zip(correct, length_rewards(lengths, correct)):
            assert -0.5 <= v <= 0.5
            if not ok:
                assert v <= 0.0


def test_only_group_statistics_matter():
    # Shifting every length by a constant or scaling them all changes nothing: λ depends only on
    # the position of len_j between the group's min and max.
    lengths, correct = [3, 9, 5, 12], [True, False, True, True]
    base = length_rewards(lengths, correct)
    assert length_rewards([n + 1000 for n in lengths], correct) == pytest.approx(base)
    assert length_rewards([n * 7 for n in lengths], correct) == pytest.approx(base)


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="2 lengths but 3 verdicts"):
        length_rewards([1, 2], [True, True, False])


def test_warmup_schedule():
    assert [length_penalty_weight(i, 0.3, warmup_iters=3) for i in range(6)] == [0, 0, 0, 0.3, 0.3, 0.3]
    assert length_penalty_weight(0, 0.3, warmup_iters=0) == 0.3  # no warm-up: on from the start
    assert length_penalty_weight(10_000, 0.3, warmup_iters=3) == 0.3  # constant, no decay
    with pytest.raises(ValueError):
        length_penalty_weight(0, 0.3, warmup_iters=-1)


def test_quickstart_turns_the_penalty_on_after_its_warm_up():
    cfg = load_config("quickstart")
    lp, last = cfg.length_penalty, cfg.rl.iterations - 1
    assert 0 < lp.warmup_iters < cfg.rl.iterations
    assert length_penalty_weight(0, lp.weight, lp.warmup_iters) == 0
    assert length_penalty_weight(last, lp.weight, lp.warmup_iters) > 0


def test_docstring_examples_run():
    result = doctest.testmod(length_mod)
    assert result.attempted >= 4 and result.failed == 0
