"""Final-answer extraction and the hacking guards (pure functions, no worker processes)."""

import time

import pytest

from longrl.rewards.math_extract import (
    clean_text,
    code_spans,
    final_answer,
    find_boxes,
    is_hedged,
    is_multi_valued,
    normalize_answer,
    reference_answer,
)


@pytest.mark.parametrize(
    "response, answer",
    [
        ("so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{\\sqrt{\\frac{a^{2}}{b_{1}}}}", "\\sqrt{\\frac{a^{2}}{b_{1}}}"),  # three levels
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
        ("first \\boxed{4}, then I recheck... \\boxed{5}", "5"),  # the last box counts
        ("\\boxed{4} wait, no: \\fbox{6}", "6"),
        ("\\framebox{204} minutes", "204"),
        ("\\boxed{\\boxed{7}}", "7"),  # a doubly boxed answer
        ("The answer is \\boxed 9 dollars", "9"),  # TeX's brace-less form
        ("$\\boxed{x = 3}$.", "x = 3"),
        ("\\boxed{\\dfrac{3}{4}}", "\\dfrac{3}{4}"),
        ("\\boxed{\\tfrac{3}{4}}", "\\tfrac{3}{4}"),
        ("\\boxed{[-2, 7)}", "[-2, 7)"),  # interval
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),  # tuple
        ("\\boxed{50\\%}", "50\\%"),
        ("\\boxed{10,\\!080}", "10,\\!080"),
        ("\\boxed{5 \\text{ cm}}", "5 \\text{ cm}"),
        ("\\boxed{\u22125}", "-5"),  # unicode minus becomes ASCII
        ("no box here.\nAnswer: 42", "42"),
        ("**Final Answer:** $\\frac{1}{3}$", "\\frac{1}{3}"),
        ("The final answer is $12$, since 3*4 = 12.", "12"),
        ("She sells 9 eggs.\n#### 1,800", "1,800"),  # GSM8K's own form
        ("Answer: 3\nLater: the answer is 4.", "4"),  # the last answer line
        ("Answer: 5, because 2 + 3 = 5.", "5"),  # prose after the value is cut
        ("The answer is 3. Let me double-check that.", "3"),
        ("Answer: x = 2 so we are done", "x = 2"),
        ("Answer: 3.5", "3.5"),
        ("Answer: 1, 2", "1, 2"),  # a list stays a list (and is hedged for a single reference)
        ("\\boxed{3} ... Answer: 4", "3"),  # a box outranks answer lines
    ],
)
def test_extracts_the_final_answer(response, answer):
    got = final_answer(response)
    assert (got.answer, got.reason) == (answer, "ok")


def test_unclosed_and_empty_boxes_are_not_answers():
    assert final_answer("\\boxed{3} and then \\boxed{4").answer == "3"  # truncated last box
    assert final_answer("put it in \\boxed{} ... \\boxed{8}").answer == "8"
    assert final_answer("format: \\boxed{}").reason == "no_answer"
    assert final_answer("I think it is 3 but I am not sure.").reason == "no_answer"


def test_box_inside_code_does_not_count():
    code_only = "Let me compute.\n```python\nprint('\\\\boxed{7}')\n```\nDone."
    assert final_answer(code_only).reason == "in_code_block"
    # A box in the text still counts when code (with its own box) comes after it.
    mixed = "\\boxed{3}\n```\nx = '\\boxed{9}'\n```"
    assert final_answer(mixed).answer == "3"
    assert final_answer("```\nAnswer: 5").reason == "in_code_block"  # unclosed fence runs to the end


def test_answer_only_in_prompt_echo_does_not_count():
    prompt = "Compute 1+1. The reference format is \\boxed{2} for an answer of two."
    assert final_answer(prompt + "\nhmm", echoes=(prompt,)).reason == "prompt_echo"
    assert final_answer(prompt + "\nso \\boxed{3}", echoes=(prompt,)).answer == "3"
    # Without the echo information the same text would be read as an answer.
    assert final_answer(prompt + "\nhmm").answer == "2"


def test_find_boxes_is_linear_in_nesting_and_length():
    deep = "\\boxed{" + "{" * 1000 + "1" + "}" * 1000 + "}"
    (a, b), *_ = sorted(find_boxes(deep), key=lambda s: s[0])
    assert deep[a:b] == "{" * 1000 + "1" + "}" * 1000
    huge = "\\boxed{" * 100_000  # never closed: quadratic scanning would take minutes
    t = time.perf_counter()
    assert find_boxes(huge) == []
    assert final_answer("x" * 1_000_000 + "\\boxed{5}").answer == "5"
    assert time.perf_counter() - t < 5


def test_clean_text_handles_bytes_surrogates_and_controls():
    assert final_answer(b"\xff\xfe junk \\boxed{5}\x00").answer == "5"
    assert "\ufffd" in clean_text("a\udcffb")  # a lone surrogate would break pickling to a worker
    assert final_answer("\x1b[31m\\boxed{\x07 12}\x1b[0m").answer == "12"
    assert clean_text("a\r\nb\rc") == "a\nb\nc"


def test_code_spans_pairs_fences():
    assert code_spans("```a``` ```b```") == [(0, 7), (8, 15)]
    assert code_spans("no code") == []


@pytest.mark.parametrize(
    "raw, want",
    [
        ("**$42$**.", "42"),
        ("\\(\\frac{1}{2}\\)", "\\frac{1}{2}"),
        ("\\[x=1\\]", "x=1"),
        ("\\displaystyle \\frac{1}{2}", "\\frac{1}{2}"),
        ("$\\boxed{7}$", "7"),
    ],
)
def test_normalize_answer(raw, want):
    assert normalize_answer(raw) == want


@pytest.mark.parametrize(
    "ref, want",
    [
        ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", "18"),
        ("#### 1,450,000", "1450000"),
        ("#### -10", "-10"),
        (27.0, "27"),
        (0.5, "0.5"),
        (36, "36"),
        ("so $s=\\boxed{1.6}$ cm", "1.6"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ],
)
def test_reference_answer(ref, want):
    assert reference_answer(ref) == want


@pytest.mark.parametrize("bad", [None, [1, 2], {"a": 1}, True])
def test_reference_answer_rejects_non_answers(bad):
    with pytest.raises(ValueError):
        reference_answer(bad)


@pytest.mark.parametrize(
    "answer, multi",
    [
        ("1 or 2", True),
        ("1 \\text{ or } 2", True),
        ("x=1 \\lor x=2", True),
        ("either 3", True),
        ("1, 2, 3, 4", True),
        ("3; 4", True),
        ("\\pm 2", True),
        ("\u00b12", True),
        ("\\{1, 2\\}", True),
        ("[1, 2]", True),
        ("(0,9) \\cup (9,36)", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", True),
        # single values
        ("58,500", False),
        ("10,\\!080", False),
        ("11,\\! 111,\\! 111,\\! 100", False),
        ("1{,}000", False),
        ("f(1, 2)", False),
        ("\\binom{5}{2}", False),
        ("x = 3", False),
        ("\\text{neither}", False),
        ("\\text{for}", False),
        ("(3)", False),
    ],
)
def test_is_multi_valued(answer, multi):
    assert is_multi_valued(answer) is multi


def test_hedging_only_matters_for_single_valued_references():
    assert is_hedged("1 or 2", "1")
    assert is_hedged("3, 5, 7", "5")
    assert is_hedged("\\pm\\sqrt{2}", "\\sqrt{2}")
    assert not is_hedged("3, 5, 7", "3, 5, 7")
    assert not is_hedged("(1, 2)", "(1,2)")
    assert not is_hedged("[1, 2)", "[1,2)")
    assert not is_hedged("1 \\pm \\sqrt{19}", "1 \\pm \\sqrt{19}")
    assert not is_hedged("1,000", "1000")
