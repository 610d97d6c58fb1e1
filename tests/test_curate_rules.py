"""The rule stages of ``longrl curate`` (k1.5 §2.1): format filter, dedup, decontamination, tags.

Each rule is tried on crafted rows that should fire and on near misses that should not; every
stage must keep in = kept + dropped, in input order, and give the same answer on every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longrl.data.curate import (
    Drop,
    FormatConfig,
    NgramIndex,
    cap_tags,
    decontaminate,
    deduplicate,
    detect_format,
    domain_of,
    format_filter,
    normalize_text,
    question_of,
    tag_counts,
)
from longrl.data.curate.rules import multiple_choice, proof, true_false
from longrl.data.math import make_math_prompt
from longrl.types import Prompt

ROOT = Path(__file__).resolve().parent.parent


def P(pid: str, question: str, reference: object = "1", task: str = "math", **tags) -> Prompt:
    """A math prompt as the loaders build it: text = problem + instruction, problem in tags."""
    if task == "math":
        p = make_math_prompt(pid, question, reference, "test")
        p.tags.update(tags)
        return p
    return Prompt(pid, question, reference, task, tags=dict(tags))


def ids(rows) -> list[str]:
    return [r.prompt.id if isinstance(r, Drop) else r.id for r in rows]


def assert_partition(inputs, result) -> None:
    assert sorted(ids(result.kept) + ids(result.dropped)) == sorted(ids(inputs))
    order = {p.id: i for i, p in enumerate(inputs)}
    for part in (ids(result.kept), ids(result.dropped)):
        assert part == sorted(part, key=order.__getitem__)


# ---------------------------------------------------------------------------------- format


MC = [
    ("Which is prime?\n(A) 4\n(B) 6\n(C) 7\n(D) 9", "7"),
    ("What is $1+1$? $\\textbf{(A) }1\\qquad\\textbf{(B) }2\\qquad\\textbf{(C) }3\\qquad\\textbf{(D) }4$", "2"),
    ("Compute $2^5$.\n$\\mathrm{(A)}\\ 10 \\qquad \\mathrm{(B)}\\ 25 \\qquad \\mathrm{(C)}\\ 32$", "32"),
    ("The set $M=\\{x\\mid x^2<4\\}$ equals\nA. $(-2,2)$\nB. $[-2,2]$\nC. $(0,2)$\nD. $\\emptyset$", "(-2,2)"),
    ("If $a>b$, then A: $a^2>b^2$ B: $2^a>2^b$ C: $\\frac1a<\\frac1b$ D: $|a|>|b|$", "B"),
    ("Which of the following numbers is largest: $2^{30}$, $3^{20}$, $5^{12}$?", "3^{20}"),
    ("Find the curve defined by $r = 2$. Enter the letter of the correct option.", "\\text{(B)}"),
    ("Which point is closest to the origin: P, Q, R, S or T?", "\\text{(C)}"),
    ("Which graph is the inverse of $f$?", "C"),
    ("Which of these functions are one-to-one? Enter the letters, separated by commas.", "\\text{A, C}"),
]
MC_NEAR_MISSES = [
    ("(a) Find $x$ if $2x=4$. (b) Find $y$ if $3y=9$. (c) Find $x+y$.", "5"),  # lower-case part labels
    ("A reaction has a pre-exponential factor (A) of $10^{14}$. Find the rate at 300 K.", "28.8"),
    ("Events satisfy P(A) = 0.5, P(B) = 0.3 and P(C) = 0.2. What is P(A or B or C) if disjoint?", "1"),
    ("(A) Find the area. (B) Find the perimeter. (C) Find the diagonal of a 3 by 4 rectangle.", "5"),
    ("Team A: 5 points, Team B: 3 points, Team C: 4 points, Team D: 1 point. Find the total.", "13"),
    ("Points A, B, C, D lie on a circle in that order. Find angle ABC.", "90"),
    ("Let $A$ be the answer. What is $A$ if $A+1=3$?", "2"),
    ("Find the value of $e$ to two decimals.", "e"),  # lower case e is a constant, not an option
    # Letters that name things the question then asks about: no options closing the question.
    ("Machines (A), (B) and (C) make 5, 7 and 9 parts an hour. How many parts do they make in 8 hours?", "168"),
    (("Four students:\nA. Smith scored 80\nB. Jones scored 90\nC. Lee scored 70\nD. Park scored 85\n"
      "What is the mean score?"), "81.25"),
]
TF = [
    ("Is 91 a prime number?", "No"),
    ("True or false: every even number greater than 2 is a sum of two primes.", "\\text{True}"),
    ("Is it true that $\\sqrt{2}$ is irrational?", None),
    ("Does the series $\\sum 1/n$ converge?", "No, it diverges."),
    ("Decide whether $7$ divides $343$. Answer yes or no.", "yes"),
    ("Determine whether the following statement is true: every square is a rectangle.", "\\text{correct}"),
]
TF_NEAR_MISSES = [
    ("For how many positive integers $n>1$ is it true that $2^{24}$ is a perfect $n$th power?", "7"),
    ("Amy answers 90% of the 20 true/false questions correctly. How many does she miss?", "2"),
    ("Solve $x^2+1=0$ over the reals.", "\\text{no solution}"),
    ("Is it true that $x^2 \\ge 0$? Find the smallest value of $x^2+2x$.", "-1"),
    ("Is $n^2+n$ even or odd for every integer $n$?", "\\text{even}"),
]
PROOF = [
    ("Prove that $\\sqrt{2}$ is irrational.", "proof"),
    ("Let $a, b > 0$. Show that $a^2 + b^2 \\ge 2ab$.", "a^2+b^2\\ge 2ab"),
    ("Demonstrate that the sum of two odd numbers is even.", "\\text{even}"),
    ("Prove or disprove: there are infinitely many primes of the form $4k+3$.", ""),
    ("Let $n$ be a positive integer. Prove that $n^3-n$ is divisible by 6.", "QED"),
    ("Show, that the equation $x^2 - 2y^2 = 1$ has infinitely many integer solutions.", "\\blacksquare"),
    ("Prove that the expression $n^3 + 5n$ is divisible by 6 for every integer $n$.", "6"),
    ("Verify that $x = 3$ satisfies $x^2 = 9$.", "9"),
]
PROOF_NEAR_MISSES = [
    ("Show your work: what is $12 \\cdot 13$?", "156"),
    ("Show that $f(x)=x^3$ is increasing, and find $f(2)$.", "8"),
    ("The records show that a shop sold 40 pens on Monday and twice as many on Tuesday. How many in all?", "120"),
    ("Tom wants to improve his time of 50 seconds by 10%. What is his target time?", "45"),
    ("Prove to be the best: a runner covers 10 km in 50 minutes. What is her speed in km/h?", "12"),
    ("Show that the answer is an integer by computing $\\frac{10!}{7!}$.", "720"),
    ("Prove that the interior angles of a pentagon sum to a multiple of 90 degrees: the sum is ____ degrees.", "540"),
    ("A teacher used 3 beakers to demonstrate the reaction, with 250 ml in each. The total is ____ ml.", "750"),
]


@pytest.mark.parametrize("question,ref", MC)
def test_multiple_choice_fires(question, ref):
    assert multiple_choice(question, ref), question


@pytest.mark.parametrize("question,ref", MC_NEAR_MISSES)
def test_multiple_choice_near_misses_are_kept(question, ref):
    assert detect_format(question, ref) is None, question


@pytest.mark.parametrize("question,ref", TF)
def test_true_false_fires(question, ref):
    assert true_false(question, ref), question


@pytest.mark.parametrize("question,ref", TF_NEAR_MISSES)
def test_true_false_near_misses_are_kept(question, ref):
    assert detect_format(question, ref) is None, question


@pytest.mark.parametrize("question,ref", PROOF)
def test_proof_fires(question, ref):
    assert proof(question, ref), question


@pytest.mark.parametrize("question,ref", PROOF_NEAR_MISSES)
def test_proof_near_misses_are_kept(question, ref):
    assert detect_format(question, ref) is None, question


def test_format_filter_names_stage_rule_and_reason_in_input_order():
    rows = [P("ok1", "What is $2+3$?", "5"), P("mc", *MC[0]), P("tf", *TF[0]), P("ok2", "Find $x$: $x+1=3$.", "2"),
            P("pf", *PROOF[0])]
    res = format_filter(rows)
    assert ids(res.kept) == ["ok1", "ok2"]
    assert [(d.prompt.id, d.stage, d.rule) for d in res.dropped] == [
        ("mc", "format", "multiple_choice"), ("tf", "format", "true_false"), ("pf", "format", "proof")]
    assert all(d.detail for d in res.dropped)
    assert res.counts == {"multiple_choice": 1, "true_false": 1, "proof": 1}
    assert_partition(rows, res)


def test_each_format_rule_can_be_switched_off():
    rows = [P("mc", *MC[0]), P("tf", *TF[0]), P("pf", *PROOF[0])]
    assert ids(format_filter(rows, proof=False).kept) == ["pf"]
    assert ids(format_filter(rows, FormatConfig(multiple_choice=False, true_false=False)).kept) == ["mc", "tf"]
    off = FormatConfig(multiple_choice=False, true_false=False, proof=False)
    assert ids(format_filter(rows, off).kept) == ["mc", "tf", "pf"]


def test_rules_read_the_question_not_the_instruction_and_skip_code():
    p = P("q", "Which of the following is even? 3, 4, 5", "4")
    assert p.text != question_of(p) and question_of(p) == "Which of the following is even? 3, 4, 5"
    # No tags["problem"]: the appended instruction is stripped from the text.
    bare = Prompt("b", p.text, "4", "math")
    assert question_of(bare) == "Which of the following is even? 3, 4, 5"
    code = P("c", "Write a function that returns True or False: is n prime?", {"tests": []}, task="code")
    assert ids(format_filter([code]).kept) == ["c"]


# ---------------------------------------------------------------------------------- dedup


def test_exact_dedup_merges_whitespace_and_latex_spacing():
    a = P("a", "Let $x = \\frac{1}{2}$. Compute $4x + 1$.", "3")
    b = P("b", "Let  $x=\\dfrac{1}{2}$ .\n\nCompute $4x\\,+\\,1$.", "3")
    c = P("c", "let $x = \\tfrac{1}{2}$.~\\quad compute $4x \\; + \\! 1$ .", "3")
    d = P("d", "Let $x = (\\frac{1}{2})$. Compute $\\left(4x + 1\\right)$.", "3")
    assert normalize_text(question_of(d)) == normalize_text("Let $x = \\left(\\frac{1}{2}\\right)$. "
                                                             "Compute $(4x+1)$.")
    assert normalize_text(question_of(a)) == normalize_text(question_of(b))
    res = deduplicate([a, b, c, d])
    assert ids(res.kept) == ["a", "d"]  # d's parentheses are text, not spacing
    assert [(d.prompt.id, d.stage, d.rule, d.match) for d in res.dropped] == [
        ("b", "dedup", "exact", "a"), ("c", "dedup", "exact", "a")]


BASE = ("A rectangular garden is {w} meters wide and {l} meters long. A path of width 1 meter runs "
        "around the outside of the garden. What is the area of the path in square meters?")


def test_near_dedup_merges_a_reworded_copy_but_not_other_numbers():
    rows = [P("orig", BASE.format(w=3, l=4), "18"),
            P("reword", BASE.format(w=3, l=4).replace("What is", "Find").replace("?", "."), "18"),
            P("numbers", BASE.format(w=5, l=7), "28"),
            P("swapped", BASE.format(w=4, l=3), "18")]
    res = deduplicate(rows, threshold=0.7)
    assert ids(res.kept) == ["orig", "numbers", "swapped"]
    (d,) = res.dropped
    assert (d.prompt.id, d.rule, d.match) == ("reword", "near", "orig")
    # The exact rule alone keeps the reworded copy; a threshold of 1 does too.
    assert ids(deduplicate(rows, near=False).kept) == ids(rows)
    assert ids(deduplicate(rows, threshold=1.0).kept) == ids(rows)


def test_dedup_keeps_the_first_occurrence():
    a, b = P("a", "Compute $3 \\cdot 7$.", "21"), P("b", "Compute $3\\cdot 7$.", "21")
    assert ids(deduplicate([a, b]).kept) == ["a"]
    assert ids(deduplicate([b, a]).kept) == ["b"]
    with pytest.raises(ValueError, match="threshold"):
        deduplicate([a], threshold=0)


# ---------------------------------------------------------------------------------- decontamination

BENCH = ["In how many ways can seven distinct beads be placed on a bracelet if rotations count as the same?",
         "Compute $\\dbinom{16}{5}$."]


def test_decontamination_drops_overlap_with_the_set_name_and_counts():
    rows = [P("copy", "Q7. In how many ways can seven distinct beads be placed on a necklace?", "360"),
            P("clean", "In how many ways can five people sit around a round table?", "24"),
            P("short", "Compute $\\dbinom{16}{5}$ .", "4368"),
            P("short_other", "Compute $\\dbinom{16}{6}$.", "8008")]
    res = decontaminate(rows, {"mine": BENCH, "empty": []})
    assert ids(res.kept) == ["clean", "short_other"]
    assert [(d.prompt.id, d.stage, d.rule, d.match) for d in res.dropped] == [
        ("copy", "decontam", "mine", "mine[0]"), ("short", "decontam", "mine", "mine[1]")]
    assert "8-gram" in res.dropped[0].detail and "whole text" in res.dropped[1].detail
    assert res.per_benchmark == {"mine": 2, "empty": 0}
    assert_partition(rows, res)


def test_decontamination_drops_image_prompts_showing_a_benchmark_picture_however_encoded():
    import io

    from PIL import Image

    from longrl.tasks import render

    bench = render.heldout_prompts(1)  # three drawn problems, all with the same text
    stream = render.train_prompts(0)
    fresh = [next(stream) for _ in range(5)]
    with Image.open(io.BytesIO(bench[2].images[0])) as im:  # the same picture, written another way
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PNG", compress_level=1)
    copy = Prompt("copy", bench[2].text, bench[2].reference, bench[2].task, images=[buf.getvalue()])
    assert copy.images[0] != bench[2].images[0]
    res = decontaminate([*fresh, copy], {"drawn": bench})
    assert ids(res.kept) == ids(fresh)  # the same instruction over another picture is another problem
    (drop,) = res.dropped
    assert drop.prompt.id == "copy" and drop.match == f"drawn:{bench[2].id}" and "image 1" in drop.detail
    assert_partition([*fresh, copy], res)


def test_decontamination_n_is_configurable():
    # Shares exactly the 6 words "placed on a bracelet if rotations" with the benchmark item.
    row = P("six", "Beads are placed on a bracelet if rotations are allowed; how many patterns of 4 beads?", "1")
    assert ids(decontaminate([row], {"b": BENCH}, n=8).kept) == ["six"]
    assert ids(decontaminate([row], {"b": BENCH}, n=6).dropped) == ["six"]
    assert ids(decontaminate([row], {"b": BENCH}, n=7).kept) == ["six"]
    with pytest.raises(ValueError, match="n=0"):
        decontaminate([row], {"b": BENCH}, n=0)


def test_boilerplate_ngrams_do_not_match_but_content_still_does():
    tail = "The answer is m/n where m and n are relatively prime positive integers. Find m+n."
    refs = [f"A bag holds {i} red and {i + 3} blue balls; two are drawn at random. {tail}" for i in range(10)]
    row = P("new", f"A fair die is rolled three times and the product is even. {tail}", "1")
    copy = P("copy", refs[4], "1")
    assert ids(decontaminate([row, copy], {"b": refs}).kept) == ["new"]  # the tail is in 10 items
    assert ids(decontaminate([row, copy], {"b": refs}, common=0).kept) == []  # open-r1's rule
    assert ids(decontaminate([row, copy], {"b": refs}, common=11).kept) == []


def test_every_benchmark_item_is_contaminated_by_itself():
    items = [P(f"b{i}", f"Problem {i}: a train leaves at {i} am at {10 * i} miles per hour and stops after "
               f"{i + 2} hours; how far does it go?", str(10 * i * (i + 2))) for i in range(30)]
    index = NgramIndex({"bench": items}, n=8)
    res = decontaminate(items, index)
    assert len(res.dropped) == 30 and {d.rule for d in res.dropped} == {"bench"}
    assert [d.match for d in res.dropped] == [f"bench:b{i}" for i in range(30)]


# ---------------------------------------------------------------------------------- tags


def test_domain_from_fields_then_keywords():
    assert domain_of(P("1", "Find the area of a triangle with sides 3, 4, 5.", "6", subject="Number Theory")) \
        == "number_theory"  # the field wins over the keywords
    assert domain_of(P("2", "Find the area of a triangle with sides 3, 4, 5.", "6")) == "geometry"
    assert domain_of(P("3", "Jo buys 3 pens at 2 dollars each. How much does she spend?", "6", ability="math")) \
        == "arithmetic"  # "math" is too coarse to be a tag: keywords decide
    p = Prompt("4", "x", "1", "math", extra={"data_source": "openai/gsm8k"})
    assert domain_of(p) == "arithmetic"
    assert domain_of(P("5", "What is 2+2?", "4", type="Introduction to Astronomy (8.282J)")) \
        == "introduction_to_astronomy"
    assert domain_of(P("6", "Compute $\\int_0^1 x^2\\,dx$.", "1/3")) == "calculus"
    assert domain_of(P("7", "What is the remainder when $2^{10}$ is divided by 7?", "2")) == "number_theory"
    assert domain_of(P("8", "In how many ways can 4 books be arranged?", "24")) == "counting_probability"
    assert domain_of(P("9", "Find $\\cos 60^\\circ$.", "1/2")) == "precalculus"
    assert domain_of(P("10", "def f(x): return x", {"tests": []}, task="code")) == "code"


def test_tag_caps_keep_the_first_n_per_tag_and_count_before_and_after():
    rows = [P(f"g{i}", f"Find the area of a circle of radius {i}.", "1") for i in range(4)]
    rows += [P(f"n{i}", f"What is the remainder when {i + 10} is divided by 3?", "1") for i in range(3)]
    rows.insert(2, P("c0", "In how many ways can 5 books be arranged?", "120"))
    res = cap_tags(rows, 2)
    assert ids(res.kept) == ["g0", "g1", "c0", "n0", "n1"]
    assert [(d.prompt.id, d.stage, d.rule) for d in res.dropped] == [
        ("g2", "tags", "tag_cap"), ("g3", "tags", "tag_cap"), ("n2", "tags", "tag_cap")]
    assert res.before == {"geometry": 4, "number_theory": 3, "counting_probability": 1}
    assert res.after == {"geometry": 2, "number_theory": 2, "counting_probability": 1} == tag_counts(res.kept)
    assert all(p.tags["domain"] for p in res.kept) and "domain" not in rows[0].tags  # inputs untouched
    per_tag = cap_tags(rows, {"geometry": 1})
    assert ids(per_tag.kept) == ["g0", "c0", "n0", "n1", "n2"]
    assert ids(cap_tags(rows, None).kept) == ids(cap_tags(rows, 0).kept) == ids(rows)
    with pytest.raises(ValueError, match="caps"):
        cap_tags(rows, -1)


# ---------------------------------------------------------------------------------- determinism

_CHAIN = """
import json, sys
from longrl.data.curate import cap_tags, decontaminate, deduplicate, format_filter
from longrl.data.math import make_math_prompt
rows = [make_math_prompt(r[0], r[1], r[2], "t") for r in json.load(sys.stdin)]
out = []
kept, dropped = format_filter(rows); out += [(d.prompt.id, d.rule, d.match) for d in dropped]
kept, dropped = deduplicate(kept, threshold=0.6); out += [(d.prompt.id, d.rule, d.match) for d in dropped]
res = decontaminate(kept, {"b": [rows[0].tags["problem"]]}, n=4); out += [(d.prompt.id, d.rule, d.match) for d in res.dropped]
res = cap_tags(res.kept, 3); out += [(d.prompt.id, d.rule, d.match) for d in res.dropped]
print(json.dumps([out, [p.id for p in res.kept]]))
"""


def test_the_rule_chain_gives_the_same_answer_whatever_the_hash_seed():
    rows = [(f"r{i}", BASE.format(w=i % 5 + 1, l=7) + (" Hurry." if i % 3 == 0 else ""), "1") for i in range(40)]
    rows += [(f"f{i}", q, r or "1") for i, (q, r) in enumerate(MC + TF + PROOF + MC_NEAR_MISSES)]
    payload = json.dumps(rows)
    outs = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", _CHAIN], input=payload, capture_output=True, text=True,
                              env=env, cwd=ROOT, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(json.loads(proc.stdout))
    assert outs[0] == outs[1]
    dropped, kept = outs[0]
    assert len(dropped) + len(kept) == len(rows) and kept and dropped
