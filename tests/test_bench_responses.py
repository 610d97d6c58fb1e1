"""bench/experiments/responses.py counts what the docs' failure analysis reports."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "responses", Path(__file__).parents[1] / "bench" / "experiments" / "responses.py")
responses = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(responses)


def _row(text, reward, tokens, stop="eos", sample=0):
    return {"response": text, "reward": reward, "tokens": tokens, "stop": stop, "sample": sample}


ROWS = [
    _row("plan 29 from 3 7 8\n7*3=21 21+8=29 yes\nanswer 7*3=21 21+8=29", 1.0, 40),
    _row("plan 29 from 3 7 8\n8+7=15 15*3=45 over\n8+7=15 15*3=45 over\n7*3=21 21+8=29 yes\nanswer 7*3=21 21+8=29",
         1.0, 70),
    _row("plan 29 from 3 7 8\n8+7=15 15*3=45 over\ngive up\nanswer 8+7=15 15*3=45", 0.0, 50),
    _row("plan 29 from 3 7 8\n8-7=1 1*3=3 under\n8+3=11 11*7=77 over\n8+7=15 15", 0.0, 192, stop="max_length"),
    _row("plan 29 from 3 7 8\n8+7=15 15*3=45 over\n8+7=15 15*3=45 over", 0.0, 192, stop="max_length", sample="greedy"),
]


def test_counts_give_ups_repeats_caps_and_first_attempt_solutions():
    s = responses.stats(ROWS, budget=45)
    assert s["responses"] == 4
    assert s["pass@1"] == pytest.approx(0.5)
    assert s["mean tokens"] == pytest.approx((40 + 70 + 50 + 192) / 4)
    assert s["give up"] == pytest.approx(0.25)
    assert s["repeat an attempt line"] == pytest.approx(0.25)  # the second row only
    assert s["stopped at the cap"] == pytest.approx(0.25)
    assert s["pass@1, no give-up, no repeat"] == pytest.approx(0.5)  # rows 1 and 4
    assert s["correct on the first attempt"] == pytest.approx(0.25)
    assert s["tokens, correct first attempt (median)"] == 40
    assert s["correct within 45 tokens"] == pytest.approx(0.25)
    assert s["greedy"] == 0.0
    assert s["greedy: repeat an attempt line"] == 1.0


def test_a_near_repeat_is_not_a_repeat():
    assert not responses.repeats("plan 9 from 1 2\n1+2=3 under\n2+1=3 under")
    assert responses.repeats("plan 9 from 1 2\n1+2=3 under\n1+2=3 under")
