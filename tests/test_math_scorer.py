"""MathScorer end to end: reasons, guards, policies, options, and the benchmark references."""

import random

import pytest

from longrl.data.math import load_math_benchmark
from longrl.errors import UserError
from longrl.rewards import get_scorer
from longrl.rewards.judge import CoTJudge
from longrl.rewards.math import MathScorer
from longrl.types import Prompt


@pytest.fixture(scope="module")
def scorer():
    s = MathScorer(timeout=5, workers=2)
    yield s
    s.close()


def P(ref, text="Solve the problem.", **tags) -> Prompt:
    return Prompt(id="p", text=text, reference=ref, task="math", tags=tags)


@pytest.mark.parametrize(
    "ref, response, reason",
    [
        ("\\frac{1}{2}", "Thinking... \\boxed{0.5}", "ok"),
        ("\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}", "ok"),
        ("3", "so x = 3, hence \\boxed{x = 3}", "ok"),
        ("1000", "\\boxed{1,000}", "ok"),
        ("18", "\\boxed{\\$18}", "ok"),
        ("5", "\\boxed{5 \\text{ cm}}", "ok"),  # units
        ("0.75", "\\boxed{\\tfrac{3}{4}}", "ok"),
        ("x = 3", "\\boxed{3}", "ok"),
        ("10080", "\\boxed{10,\\!080}", "ok"),
        ("50", "\\boxed{50\\%}", "ok"),
        ("-5", "\\boxed{\u22125}", "ok"),
        ("(3,4]", "\\boxed{(3, 4]}", "ok"),
        ("(3,4]", "\\boxed{[3, 4]}", "wrong"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}", "ok"),
        ("1,-2", "\\boxed{-2, 1}", "ok"),
        ("5", "first \\boxed{5}. Wait, that is wrong: \\boxed{6}", "wrong"),  # only the final span
        ("6", "first \\boxed{5}. Wait, that is wrong: \\boxed{6}", "ok"),  # a correction is fine
        ("27.0", "Answer: 27", "ok"),
        ("She has 9.\n#### 1,800", "#### 1800", "ok"),  # GSM8K reference and answer forms
        ("1", "\\boxed{1 \\text{ or } 2}", "hedged"),
        ("2", "the answer is one of \\boxed{1, 2, 3, 4}", "hedged"),
        ("\\sqrt{2}", "\\boxed{\\pm\\sqrt{2}}", "hedged"),
        ("5", "```\nprint(5)  # \\boxed{5}\n```", "in_code_block"),
        ("5", "I give up.", "no_answer"),
        ("5", "\\boxed{" + "1+" * 300 + "1}", "too_long"),
    ],
)
def test_reasons(scorer, ref, response, reason):
    (s,) = scorer([P(ref)], [response])
    assert s.reason == reason, s.parts
    assert s.value == (1.0 if reason == "ok" else 0.0)


def test_parts_carry_the_extracted_answer(scorer):
    (s,) = scorer([P("4")], ["so \\boxed{2+2}"])
    assert s.parts["answer"] == "2+2" and s.parts["reference"] == "4" and s.parts["grader"] == "rule"
    (s,) = scorer([P("4")], ["\\boxed{" + "9" * 5000 + "}"])
    assert s.parts["answer_chars"] == 5000 and len(s.parts["answer"]) <= 200


def test_prompt_echo_does_not_count(scorer):
    problem = "Find x if 2x = 10. Example of the format: \\boxed{5} means five."
    p = P("5", text=problem + "\n\nPut the answer in \\boxed{}.", problem=problem)
    assert scorer([p], [problem + " ... I am not sure."])[0].reason == "prompt_echo"
    assert scorer([p], [problem + " ... so \\boxed{5}."])[0].reason == "ok"


def test_counts_total_reasons_over_calls():
    with MathScorer(workers=1) as s:
        s([P("1")] * 3, ["\\boxed{1}", "\\boxed{2}", "nothing"])
        s([P("1")], ["\\boxed{1}"])
        assert s.counts == {"ok": 2, "wrong": 1, "no_answer": 1}


def test_bad_reference_scores_zero_with_a_reason(scorer):
    scores = scorer([P(None), P("")], ["\\boxed{1}", "\\boxed{1}"])
    assert [s.reason for s in scores] == ["bad_reference", "bad_reference"]


def test_registry_builds_the_math_scorer():
    s = get_scorer("math", workers=1, timeout=3)
    try:
        assert isinstance(s, MathScorer)
        assert s([P("2")], ["\\boxed{2}"])[0].correct
    finally:
        s.close()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"policy": "vote"}, "unknown policy 'vote'"),
        ({"policy": "judge"}, "needs a judge"),
        ({"policy": "rule_then_judge"}, "judge_base_url"),
        ({"timeout": 0}, "timeout"),
        ({"workers": 0}, "workers"),
        ({"max_answer_chars": 0}, "max_answer_chars"),
    ],
)
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        MathScorer(**options)


class ScriptedBackend:
    """A judge backend that answers from a script and records what it was asked."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.prompts = []

    def complete(self, prompts):
        self.prompts.extend(prompts)
        return [self.replies.pop(0) for _ in prompts]


def test_rule_then_judge_asks_the_judge_only_where_the_rule_cannot_read():
    backend = ScriptedBackend(['Same. {"correct": true}', 'No. {"correct": false}'])
    with MathScorer(workers=1, policy="rule_then_judge", judge=CoTJudge(backend)) as s:
        scores = s(
            [P("7"), P("7"), P("7"), P("7"), P("7")],
            ["\\boxed{7}", "\\boxed{8}", "it is seven", "\\boxed{7 or 8}", "no idea at all"],
        )
    assert [(x.reason, x.parts["grader"]) for x in scores] == [
        ("ok", "rule"),
        ("wrong", "rule"),
        ("ok", "judge"),
        ("hedged", "rule"),
        ("wrong", "judge"),
    ]
    assert scores[2].parts["rule_reason"] == "no_answer"
    assert len(backend.prompts) == 2 and "it is seven" in backend.prompts[0]


def test_judge_policy_sends_everything_that_passes_the_guards():
    backend = ScriptedBackend(['{"correct": true}', "garbage", "still garbage"])
    with MathScorer(policy="judge", judge=CoTJudge(backend)) as s:
        assert s.pool is None  # no math-verify workers for a judge-only scorer
        scores = s([P("1"), P("1"), P("1")], ["\\boxed{1}", "\\boxed{1 or 2}", "\\boxed{1}"])
    assert [x.reason for x in scores] == ["ok", "hedged", "judge_error"]
    assert scores[2].value == 0.0 and scores[2].parts["judge_attempts"] == 2


@pytest.mark.parametrize("name", ["math500", "gsm8k", "minerva_math"])
def test_reference_solutions_grade_correct_and_other_answers_do_not(scorer, name):
    # A sample keeps this fast; bench/math_grader.py runs the full sets.
    prompts = random.Random(0).sample(load_math_benchmark(name), 25)
    sols = [p.tags["solution"] for p in prompts]
    assert sum(s.correct for s in scorer(prompts, sols)) >= 24
    others = sols[1:] + sols[:1]
    pairs = [
        (p, o) for p, o, q in zip(prompts, others, prompts[1:] + prompts[:1]) if p.reference != q.reference
    ]
    accepted = sum(s.correct for s in scorer([p for p, _ in pairs], [o for _, o in pairs]))
    assert accepted <= 1
