"""The format filter of ``longrl curate`` (k1.5 §2.1), and the records every rule stage returns.

k1.5 §2.1 excludes multiple-choice, true/false and proof-based questions from the RL prompt set:
a grader that only compares final answers accepts a guessed option letter or "Yes", and cannot
check a proof at all, so such prompts reward guessing (false-positive verification). Each rule
reads the question itself (:func:`question_of`: a math prompt's raw problem, never the appended
answer-format instruction) and the reference answer, and aims at precision: a false drop loses a
good prompt, a miss only leaves one guessable prompt in the set.

=================  ===========================================================================
rule               fires on
=================  ===========================================================================
multiple_choice    lettered options closing the question ("(A) .. (B) .. (C) ..", AMC's
                   ``\\textbf{(A) }``, or "A. .. B. .. C. .. D. .." at line starts); "which of the
                   following" / "which of these"; "enter the letter of the correct option"; a
                   reference that is an option letter A-E (``C``, ``(C)``, ``\\text{(C)}``)
true_false         a reference True/False/Yes/No (alone or opening the answer: "No, since ..");
                   "true or false" / "yes or no" in the question, or a question opening with "Is
                   it true that", when the reference is no mathematical answer (no digit, LaTeX
                   command or operator)
proof              a reference "proof", "QED" or a tombstone; a proof verb ("Prove", "Show
                   that", "Demonstrate that", "Verify that") in a question that asks for no value
                   ("find", "by computing", "how many", a "?", a blank "____") or whose reference
                   is empty
=================  ===========================================================================

Near misses the rules leave alone: "(a)"/"(b)" part labels, a single "(A)" label in a formula,
"P(A), P(B), P(C)", sub-questions ("(A) Find .. (B) Find .."), letters followed by the question
("machines (A), (B) and (C) ... How many parts ...?"), "is it true that" inside a question ("for
how many n is it true that .."), "Show your work", "show that .. and find ..".

Every stage of the rule funnel (this one, :mod:`.dedup`, :mod:`.decontam`, :mod:`.tags`) returns
a :class:`StageResult`: the kept prompts in input order and one :class:`Drop` per dropped prompt.

    >>> from longrl.types import Prompt
    >>> rows = [Prompt("1", "What is 2+3?", "5", "math"),
    ...         Prompt("2", "Which is prime? (A) 4 (B) 6 (C) 7 (D) 9", "C", "math")]
    >>> kept, dropped = format_filter(rows)
    >>> [p.id for p in kept], [(d.prompt.id, d.rule) for d in dropped]
    (['1'], [('2', 'multiple_choice')])
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from longrl.types import Prompt


@dataclass(frozen=True)
class Drop:
    """A prompt a rule stage dropped. Created by the stages of this package; read by the curate
    pipeline, which writes it to ``rejected.jsonl`` and counts it in the report."""

    prompt: Prompt
    stage: str  # "format", "dedup", "decontam" or "tags"
    rule: str  # the rule inside the stage (for decontam: the reference set's name)
    detail: str  # a short human-readable reason, e.g. "answer '(C)' is an option letter"
    match: str | None = None  # the id this row duplicates (dedup) or overlaps (decontam: "set:id")


@dataclass
class StageResult:
    """What a rule stage returns; unpacks as ``kept, dropped = stage(prompts)``."""

    kept: list[Prompt]  # in input order
    dropped: list[Drop]  # in input order

    def __iter__(self):
        return iter((self.kept, self.dropped))

    @property
    def counts(self) -> dict[str, int]:
        """Drops per rule, in the order the rules first fired."""
        out: dict[str, int] = {}
        for d in self.dropped:
            out[d.rule] = out.get(d.rule, 0) + 1
        return out


def question_of(p: Prompt) -> str:
    """The question a rule reads: a math prompt's raw problem, else its text without the
    answer-format instruction that :func:`longrl.data.math.render_math_prompt` appends."""
    from longrl.data.math import INSTRUCTION

    problem = p.tags.get("problem") if isinstance(p.tags, dict) else None
    if isinstance(problem, str) and problem.strip():
        return problem.strip()
    return p.text.replace(INSTRUCTION, "").strip()


def reference_text(p: Prompt) -> str | None:
    """The reference answer as text; None when it is not an answer (code tests, a dict, None)."""
    ref = p.reference
    if isinstance(ref, bool) or ref is None:
        return None if ref is None else str(ref)
    if isinstance(ref, (str, int, float)):
        return str(ref)
    return None


# ---------------------------------------------------------------------------------- answers

_WRAPPER = re.compile(r"\\(?:boxed|text|textbf|textrm|textup|textit|mathrm|mathbf|mathit|operatorname)\s*"
                      r"\{([^{}]*)\}")


def plain_answer(reference: str) -> str:
    """The reference without math delimiters and ``\\boxed``/``\\text``-style wrappers.

    >>> plain_answer("$\\\\boxed{\\\\text{(C)}}$.")
    '(C)'
    """
    s = reference.strip().replace("$", "")
    s = re.sub(r"^\\\(|\\\)$", "", s).strip()
    prev = None
    while prev != s:
        prev, s = s, _WRAPPER.sub(r"\1", s)
    return s.strip().rstrip(".").strip()


_OPTION_LETTER = re.compile(r"\(?\s*([A-E])\s*\)?")
_LETTER_LIST = re.compile(r"\(?[A-J]\)?(?:\s*,\s*(?:and\s+)?\(?[A-J]\)?)+")
_TF_ANSWER = re.compile(r"(true|false|yes|no)(?:\s*[,.;:!]|\s*$)", re.IGNORECASE)
_PROOF_ANSWER = re.compile(r"(?:proof|q\.?e\.?d\.?|see (?:the )?proof|\\blacksquare|\\square|\u220e|\u25a0)",
                           re.IGNORECASE)
# A reference that is a mathematical answer: a digit, a LaTeX command or an operator in it.
_MATHY = re.compile(r"[\d\\^_=<>+*/]")

# ---------------------------------------------------------------------------- multiple choice

# An option label "(A)" with optional AMC-style \textbf{..} / \text{..} / \mathrm{..} around it, or
# "(\mathrm{A})"; "(a)" part labels are lower-case and never match.
_PAREN_LABEL = re.compile(
    r"(?:\\(?:textbf|mathbf|text|textrm|mathrm|bf)\s*\{\s*)?"
    r"(?<![\w\\])\(\s*(?:\\(?:textbf|mathbf|text|textrm|mathrm)\s*\{\s*([A-E])\s*\}|([A-E]))\s*\)")
# "A. 3", "B: 4", "C) 5" at a line start, or after whitespace that follows a non-letter
# ("... $\{1\}$ B: ..."), so that "team A: 5 points" or "point A. Then" do not count.
_DOT_LABEL = re.compile(r"(?:^|(?<=\n)|(?<=[^A-Za-z\s])\s+|\s{2,}|\\q?quad\s*)([A-E])\s*[.:．：)]\s",
                        re.MULTILINE)
_FOLLOWING = re.compile(r"\bwhich\s+(?:one\s+)?of\s+(?:the\s+following|these)\b", re.IGNORECASE)
_LETTER_CUE = re.compile(
    r"\b(?:enter|give|select|choose|circle|write)\s+(?:only\s+)?the\s+letters?\b"
    r"|\bcorrect\s+(?:option|choice|answer\s+choice)s?\b|\banswer\s+choices?\b",
    re.IGNORECASE)
# Sub-questions start with a verb or a question word: "(A) Find .. (B) Find .." is not a choice.
_SUBQUESTION = re.compile(r"\s*(?:find|compute|calculate|determine|evaluate|prove|show|explain|what|how|why|"
                          r"solve|simplify|express|write|draw|sketch|give|list|describe)\b", re.IGNORECASE)


def _labels_in_order(question: str, pattern: re.Pattern[str]) -> tuple[int, list[int]]:
    """How many labels A, B, C, ... appear in that order; and where each one's option text starts."""
    want, ends = "A", []
    for m in pattern.finditer(question):
        letter = next(g for g in m.groups() if g)
        if letter == want:
            ends.append(m.end())
            want = chr(ord(want) + 1)
            if want > "E":
                break
    return len(ends), ends


def _options(question: str) -> str | None:
    """Lettered options after the stem: no question follows them (a "?" after the last label means
    the letters name things the question then asks about), and they are not sub-questions."""
    for pattern, need, form in ((_PAREN_LABEL, 3, "({})"), (_DOT_LABEL, 4, "{}.")):
        count, starts = _labels_in_order(question, pattern)
        if count >= need and "?" not in question[starts[-1]:]:
            verbs = sum(bool(_SUBQUESTION.match(question, s)) for s in starts)
            if verbs < 2:
                return f"{count} lettered options " + " ".join(form.format(c) for c in "ABCDE"[:count])
    return None


def multiple_choice(question: str, reference: str | None) -> str | None:
    """Why ``question`` is multiple choice, or None.

    >>> multiple_choice("Find $x$. $\\\\textbf{(A) }1 \\\\qquad \\\\textbf{(B) }2 \\\\qquad \\\\textbf{(C) }3$", "2")
    '3 lettered options (A) (B) (C)'
    >>> multiple_choice("(a) Find $x$. (b) Find $y$.", "3") is None
    True
    """
    options = _options(question)
    if options:
        return options
    if _FOLLOWING.search(question):
        return f"{' '.join(_FOLLOWING.search(question).group(0).split())!r} in the question"
    if _LETTER_CUE.search(question):
        return f"{_LETTER_CUE.search(question).group(0)!r} in the question"
    if reference is not None:
        ans = plain_answer(reference)
        if _OPTION_LETTER.fullmatch(ans):
            return f"answer {ans!r} is an option letter"
        if _LETTER_LIST.fullmatch(ans) and re.search(r"\bletters?\b", question, re.IGNORECASE):
            return f"answer {ans!r} lists option letters"
    return None


# -------------------------------------------------------------------------------- true/false

_TF_PHRASE = re.compile(r"\b(?:true\s+or\s+false|false\s+or\s+true|yes\s+or\s+no|true\s*/\s*false|yes\s*/\s*no)\b",
                        re.IGNORECASE)
# "Is it true that ..." opening the question or a sentence; "for how many n is it true that" does not.
_IS_IT_TRUE = re.compile(r"(?:^|[.!?:]\s+|\n\s*)is\s+it\s+(?:true|the\s+case)\s+that\b", re.IGNORECASE)
_STATEMENT = re.compile(r"\b(?:determine|decide|state)\s+(?:whether|if)\s+(?:the\s+following\s+|each\s+|this\s+|"
                        r"the\s+)?statements?\s+(?:is|are)\s+(?:true|correct|false)\b", re.IGNORECASE)


def true_false(question: str, reference: str | None) -> str | None:
    """Why ``question`` is a true/false (yes/no) question, or None.

    >>> true_false("Is 91 prime?", "No")
    "answer 'No'"
    >>> true_false("For how many $n$ is it true that $n^2<10$?", "3") is None
    True
    """
    if reference is not None:
        m = _TF_ANSWER.match(plain_answer(reference))
        if m:
            return f"answer {plain_answer(reference)[:24]!r}"
    # The question cues count only when the reference is no mathematical answer: "90% of the
    # true/false questions" in a word problem whose answer is 41 is no true/false question.
    if reference is not None and _MATHY.search(plain_answer(reference)):
        return None
    m = _TF_PHRASE.search(question) or _STATEMENT.search(question) or _IS_IT_TRUE.search(question)
    if m:
        return f"{' '.join(m.group(0).split()).strip('.!?: ')!r} in the question, no mathematical answer"
    return None


# ------------------------------------------------------------------------------------ proof

_PROOF_VERB = re.compile(
    r"\bprove\b(?!\s+to\s+be)|\bshow\s*,?\s+that\b|\bdemonstrate\s+(?:that|why|how)\b"
    r"|\bverify\s+that\b|\bestablish\s+that\b|\bprove\s+or\s+disprove\b",
    re.IGNORECASE)
# A request for a value that a final-answer grader can check: a verb in any form ("by computing"),
# a question word, a "?" or a blank to fill in ("The sum is ____ degrees.").
_ASKS_VALUE = re.compile(
    r"\b(?:find(?:ing)?|comput(?:e|ing)|calculat(?:e|ing)|evaluat(?:e|ing)|determin(?:e|ing)|solv(?:e|ing)"
    r"|simplif(?:y|ying)|express(?!ion)|enter|how\s+(?:many|much|long|far|old)|give\s+(?:the|a|an|your)|list)\b"
    r"|\?|_{3,}|(?:\\_){3,}|\(\s{2,}\)|\uff08\s*\uff09", re.IGNORECASE)


def proof(question: str, reference: str | None) -> str | None:
    """Why ``question`` asks for a proof, or None.

    >>> proof("Prove that $n^2+n$ is even for every integer $n$.", "even")
    "'Prove' and no value asked"
    >>> proof("Show your work: what is $3 \\\\cdot 4$?", "12") is None
    True
    >>> proof("Show that $f$ is increasing, and find $f(2)$.", "5") is None
    True
    """
    ans = plain_answer(reference) if reference is not None else ""
    if ans and _PROOF_ANSWER.fullmatch(ans):
        return f"answer {ans!r}"
    m = _PROOF_VERB.search(question)
    if m is None:
        return None
    verb = " ".join(m.group(0).split()).capitalize()
    if not ans:
        return f"{verb!r} and no reference answer"
    if not _ASKS_VALUE.search(question):
        return f"{verb!r} and no value asked"
    return None


# ------------------------------------------------------------------------------------ stage

FormatRule = Callable[[str, "str | None"], "str | None"]
FORMAT_RULES: dict[str, FormatRule] = {
    "multiple_choice": multiple_choice,
    "true_false": true_false,
    "proof": proof,
}


@dataclass(frozen=True)
class FormatConfig:
    """Which format rules run; each rule is switchable."""

    multiple_choice: bool = True  # drop lettered-option / "which of the following" prompts
    true_false: bool = True  # drop True/False and Yes/No prompts
    proof: bool = True  # drop prompts that ask for a proof
    # Tasks the filter leaves alone: a code prompt is graded by tests, not by a final answer, and
    # "return True or False" in its statement is no true/false question.
    skip_tasks: tuple[str, ...] = field(default=("code",))

    def rules(self) -> list[tuple[str, FormatRule]]:
        return [(name, fn) for name, fn in FORMAT_RULES.items() if getattr(self, name)]


def detect_format(question: str, reference: str | None, config: FormatConfig | None = None
                  ) -> tuple[str, str] | None:
    """The first format rule that fires on (question, reference), as (rule, detail); else None."""
    for name, fn in (config or FormatConfig()).rules():
        detail = fn(question, reference)
        if detail is not None:
            return name, detail
    return None


def format_filter(prompts: Sequence[Prompt], config: FormatConfig | None = None, **switches: Any) -> StageResult:
    """Drop multiple-choice, true/false and proof prompts (k1.5 §2.1); ``switches`` override
    ``config`` fields, e.g. ``format_filter(rows, proof=False)``."""
    config = config or FormatConfig()
    if switches:
        config = dataclasses.replace(config, **switches)
    kept: list[Prompt] = []
    dropped: list[Drop] = []
    for p in prompts:
        hit = None if p.task in config.skip_tasks else detect_format(question_of(p), reference_text(p), config)
        if hit is None:
            kept.append(p)
        else:
            dropped.append(Drop(p, "format", hit[0], hit[1]))
    return StageResult(kept, dropped)
