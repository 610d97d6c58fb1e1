"""The built-in task: levels, held-out isolation, trace writer, verifier."""

import itertools
import random

import pytest

from longrl.tasks import countdown as cd


def test_levels_and_heldout():
    held = cd.heldout_prompts()
    assert len(held) == 450 and {p.level for p in held} == {1, 2, 3}
    assert {p.difficulty for p in held} == {0.0, 0.5, 1.0}
    for p in held:
        n = cd.solving_first_steps(p.reference["numbers"], p.reference["target"])
        assert (n >= 3) if p.level == 1 else (n == 2 if p.level == 2 else n == 1)


def test_heldout_never_in_training():
    held = {(tuple(sorted(p.reference["numbers"])), p.reference["target"]) for p in cd.heldout_prompts()}
    train = itertools.islice(cd.train_prompts(0), 3000)
    assert not any((tuple(sorted(p.reference["numbers"])), p.reference["target"]) in held for p in train)


def test_full_patience_traces_are_correct_and_show_search():
    rng = random.Random(0)
    for p in itertools.islice(cd.train_prompts(1), 300):
        n, t = p.reference["numbers"], p.reference["target"]
        trace = cd.write_trace(n, t, rng, give_up_prob=0.0, slip_prob=0.3)
        assert cd.verify(trace, n, t).reason == "ok", trace
        assert trace.startswith(f"plan {t} from")
    short = cd.write_trace([3, 7, 8], 29, rng, short=True)
    assert short.count("\n") == 0 and cd.verify(short, [3, 7, 8], 29).correct


def test_fixed_order_traces_try_every_first_step_in_turn_until_the_target():
    for p in itertools.islice(cd.train_prompts(3), 200):
        n, t = p.reference["numbers"], p.reference["target"]
        trace = cd.write_trace(n, t, random.Random(0), give_up_prob=0.0, slip_prob=0.0, order="fixed")
        tried = trace.split("\n")[1:-1]
        expected = cd.attempts(n, t)
        first_hit = next(i for i, a in enumerate(expected) if a.value == t)
        assert [line.split(" ")[0] for line in tried] == [f"{a.first.text()}={a.first.value}"
                                                         for a in expected[: first_hit + 1]]
        assert cd.verify(trace, n, t).reason == "ok"
    with pytest.raises(ValueError, match="order"):
        cd.write_trace([3, 7, 8], 29, random.Random(0), order="sorted")


def test_give_up_traces_answer_wrong():
    rng = random.Random(2)
    traces = [cd.write_trace([3, 7, 8], 29, rng, give_up_prob=1.0) for _ in range(50)]
    gave_up = [t for t in traces if "give up" in t]
    assert gave_up and all(not cd.verify(t, [3, 7, 8], 29).correct for t in gave_up)


def test_fixed_patience_stops_after_that_many_attempts_on_the_same_order():
    n, t = [3, 7, 8], 29
    tries = cd.attempts(n, t)
    full = cd.write_trace(n, t, random.Random(4), slip_prob=0.0, patience=len(tries))
    for patience in range(1, len(tries) + 1):
        trace = cd.write_trace(n, t, random.Random(4), slip_prob=0.0, patience=patience)
        lines = [ln for ln in trace.split("\n") if ln.endswith(("over", "under", "yes"))]
        assert lines == [ln for ln in full.split("\n") if ln.endswith(("over", "under", "yes"))][:len(lines)]
        assert len(lines) == patience or lines[-1].endswith("yes")
        assert ("give up" in trace) != cd.verify(trace, n, t).correct
    with pytest.raises(ValueError, match="patience"):
        cd.write_trace(n, t, random.Random(0), patience=0)


@pytest.mark.parametrize("response,reason", [
    ("7*3=21 21+8=29 yes\nanswer 7*3=21 21+8=29", "ok"),
    ("answer (7*3)+8", "ok"),
    ("answer 8+(3*7)", "ok"),
    ("answer 7*3=22 22+7=29", "bad_arithmetic"),
    ("answer 7*3=21 21+7=28", "wrong_numbers"),
    ("answer 7*3=21", "wrong_numbers"),
    ("answer 7+3=10 10+8=18", "wrong_value"),
    ("answer (7*3)+8+0", "wrong_numbers"),
    ("answer __import__('os').system('x')", "bad_expression"),
    ("answer 9**9**9", "bad_expression"),
    ("answer " + "(" * 5000 + "1" + ")" * 5000, "too_long"),
    ("no answer line", "no_answer"),
    ("answer 1+1\nanswer (7*3)+8", "ok"),  # the last answer counts
])
def test_verifier(response, reason):
    assert cd.verify(response, [3, 7, 8], 29).reason == reason


def test_scorer_through_the_registry():
    from longrl.rewards import get_scorer

    p = cd.heldout_prompts()[0]
    n, t = p.reference["numbers"], p.reference["target"]
    good = cd.write_trace(n, t, random.Random(0), give_up_prob=0.0)
    scores = get_scorer("countdown")([p, p], [good, "answer 1+1"])
    assert [s.value for s in scores] == [1.0, 0.0]
