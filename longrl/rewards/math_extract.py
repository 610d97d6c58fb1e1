"""Find the final answer in a long chain of thought, and the guards against reward hacking.

Everything here is a pure function of strings and runs in linear time in the length of the
response: it sees untrusted model output (up to megabytes of it) in the trainer's own process, so
no regular expression here may backtrack and nothing may recurse on the input's nesting depth. The
slow part, math-verify's LaTeX parsing and comparison, runs in worker processes
(:mod:`longrl.rewards.math_pool`).

Extraction rule (DESIGN §6): the answer is the content of the **last** closed ``\\boxed{...}`` /
``\\fbox{...}`` / ``\\framebox{...}`` outside code blocks and outside any echo of the prompt; only
when there is no box at all, the last ``Answer: ...`` / ``final answer is ...`` / ``#### ...``
line. math-verify's own ``parse`` on a whole response may take the *first* box or merge several
boxes into a set (NOTES.md, "Math grading"), so we hand it only the final span.

    >>> final_answer("First \\\\boxed{4}. Wait, that is wrong: \\\\boxed{\\\\frac{1}{2}}.").answer
    '\\\\frac{1}{2}'
    >>> final_answer("```\\n\\\\boxed{7}\\n```").reason
    'in_code_block'
    >>> is_hedged("1 \\\\text{ or } 2", reference="1"), is_hedged("1, 2", reference="1,2")
    (True, False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Control characters other than tab and newline carry no mathematics and confuse parsers.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Characters a model writes for "-" that LaTeX parsers do not read as minus: U+2212 MINUS SIGN,
# U+2013 EN DASH, U+FE63 SMALL HYPHEN-MINUS, U+FF0D FULLWIDTH HYPHEN-MINUS.
_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})

# One token pass over the text finds every box opener, every brace and every escaped brace.
# ``\framebox[w][pos]{...}`` may carry optional width arguments; ``[^\]\n]{0,40}`` is bounded so
# it cannot backtrack over a long line.
_BOX_TOKENS = re.compile(r"\\(?:boxed|fbox|framebox(?:\[[^\]\n]{0,40}\]){0,2})[ \t]*\{|\\[{}]|[{}]")
# ``\boxed 5`` (no braces, as TeX allows for one token): the argument runs to whitespace or "$".
_BOX_BARE = re.compile(r"\\boxed[ \t]+([^\s${}]{1,200})")
# "Answer: 42", "**Final Answer:** 42", "The final answer is $42$.", "#### 42" (GSM8K's own form).
_ANSWER_LINE = re.compile(r"(?im)(?:\banswer\b[ \t*]*(?:is\b|:|=)|^[ \t]*####)[ \t*:]*(?P<ans>[^\n]*)")
_LEADING_MATH = re.compile(r"\$+([^$\n]+)\$+|\\\(([^\n]*?)\\\)")
# Where the value on an answer line ends and prose begins. The space run is bounded so a long run
# of spaces cannot make the search quadratic.
_PROSE_TAIL = re.compile(
    r"(?:\.\s|;\s|,?[ \t]{1,8}(?:since|because|as|so|which|where|but|therefore|thus|hence)\b).*",
    re.IGNORECASE,
)
_FENCE = re.compile(r"```|~~~")
_DOLLARS = re.compile(r"^\$+|\$+$")

# Thousands separators in references and answers: 58,500 / 10,\!080 / 1{,}000 / 11,\! 111.
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:(?:,|\{,\})(?:\\[!,;: ]|[ \t])?[ \t]?\d{3})+(?![\d])")
# Words and symbols that join alternatives: "1 or 2", "either", "\lor", "\vee", "\pm", "\cup".
_ALTERNATIVES = re.compile(
    r"(?<![\\A-Za-z])(?:or|and|either)(?![A-Za-z])|\\(?:lor|vee|pm|mp|cup)(?![A-Za-z])|\u00b1"
)
_OPENERS = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True)
class Extraction:
    """The final answer of a response, or why there is none.

    ``reason`` is ``ok`` when ``answer`` is set; otherwise ``no_answer``, ``in_code_block`` (the
    only answer is inside a code block) or ``prompt_echo`` (the only answer is inside an echo of
    the prompt). ``kind`` says where the answer came from: ``boxed`` or ``answer_line``.
    """

    answer: str | None
    reason: str
    kind: str = ""
    start: int = -1  # offset of the answer span in the cleaned response


def clean_text(text: str | bytes) -> str:
    """Make untrusted text safe to scan: valid UTF-8, no control characters, ASCII minus signs.

    >>> clean_text(b"\\xff 3\\x00 \\xe2\\x88\\x92 1") == "\\ufffd 3  - 1"
    True
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = str(text)
    # Lone surrogates (from a lossy decode upstream) cannot be encoded or pickled to a worker.
    text = text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
    return _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n")).translate(_MINUS)


def code_spans(text: str) -> list[tuple[int, int]]:
    """Spans of fenced code blocks (``` or ~~~); an unclosed fence runs to the end of the text.

    >>> code_spans("a ```x``` b ```y")
    [(2, 9), (12, 16)]
    """
    marks = [m.start() for m in _FENCE.finditer(text)]
    spans = []
    for i in range(0, len(marks), 2):
        end = marks[i + 1] + 3 if i + 1 < len(marks) else len(text)
        spans.append((marks[i], end))
    return spans


def echo_spans(text: str, echoes: tuple[str, ...] | list[str]) -> list[tuple[int, int]]:
    """Spans where the response repeats the prompt (or the problem) verbatim.

    Short strings are ignored: a 10-character problem ("Find 2+2.") repeated is not an echo worth
    masking and would mask ordinary reasoning.
    """
    spans = []
    for echo in echoes:
        echo = (echo or "").strip()
        if len(echo) < 20:
            continue
        start = text.find(echo)
        while start != -1:
            spans.append((start, start + len(echo)))
            start = text.find(echo, start + len(echo))
    return spans


def mask(text: str, spans: list[tuple[int, int]]) -> str:
    """Blank out ``spans`` with spaces, keeping every other offset unchanged."""
    if not spans:
        return text
    chars = list(text)
    for a, b in spans:
        chars[a:b] = " " * (b - a)
    return "".join(chars)


def find_boxes(text: str) -> list[tuple[int, int]]:
    """Content spans ``(start, end)`` of every closed box, in order of their closing brace.

    Braces are matched with a depth counter in one pass, so a thousand levels of nesting cost the
    same as one, and an unclosed box (a truncated response) is simply not a box.

    >>> t = "\\\\boxed{\\\\frac{1}{2}} and \\\\fbox{x^{2}}"
    >>> [t[a:b] for a, b in find_boxes(t)]
    ['\\\\frac{1}{2}', 'x^{2}']
    """
    depth = 0
    open_boxes: list[tuple[int, int]] = []  # (depth inside the box, content start)
    found: list[tuple[int, int]] = []
    for m in _BOX_TOKENS.finditer(text):
        tok = m.group()
        if tok[0] == "\\" and len(tok) == 2:  # \{ or \}: a literal brace, not grouping
            continue
        if tok == "}":
            if open_boxes and open_boxes[-1][0] == depth:
                found.append((open_boxes.pop()[1], m.start()))
            depth = max(depth - 1, 0)
        else:  # "{" or a box opener, which ends with "{"
            depth += 1
            if tok != "{":
                open_boxes.append((depth, m.end()))
    return found


def _last_box(text: str) -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    for a, b in find_boxes(text):
        content = text[a:b].strip()
        # An empty box ("put your answer in \boxed{}") is an instruction, not an answer. The box
        # that closes last is the outermost of a nest and the latest in the text.
        if content and (best is None or b >= best[1]):
            best = (content, b)
    for m in _BOX_BARE.finditer(text):
        if best is None or m.end() > best[1]:
            best = (m.group(1), m.end())
    return best


def _last_answer_line(text: str) -> tuple[str, int] | None:
    best = None
    for m in _ANSWER_LINE.finditer(text):
        if m.group("ans").strip(" \t*$.:"):
            best = (m.group("ans"), m.start("ans"))
    if best is None:
        return None
    line = best[0].strip()
    # "The final answer is $42$, since ...": the math span right after the marker is the answer,
    # not the prose that follows it.
    math = _LEADING_MATH.match(line)
    if math:
        return math.group(1) or math.group(2), best[1]
    # "Answer: 5, because 2 + 3 = 5." -- the prose after the value is not part of it. (A line
    # this long is over any answer-length limit anyway; leave it whole and skip the search.)
    return (_PROSE_TAIL.sub("", line) if len(line) <= 4096 else line), best[1]


def _extract(text: str) -> Extraction | None:
    box = _last_box(text)
    if box is not None:
        return Extraction(normalize_answer(box[0]), "ok", "boxed", box[1])
    line = _last_answer_line(text)
    if line is not None:
        answer = normalize_answer(line[0])
        if answer:
            return Extraction(answer, "ok", "answer_line", line[1])
    return None


def final_answer(response: str | bytes, echoes: tuple[str, ...] | list[str] = (), *,
                 mask_code: bool = True) -> Extraction:
    """The final answer of ``response`` (see the module docstring for the rule).

    ``echoes`` are texts the model was shown (the prompt, the problem): an answer that appears
    only inside a verbatim copy of them is the prompt's, not the model's. ``mask_code=False``
    reads answers inside code blocks too (the guard ``rewards.math.reject_code_block`` off).

    >>> final_answer("Answer: 12").answer, final_answer("no idea").reason
    ('12', 'no_answer')
    >>> final_answer("```\\n\\\\boxed{7}\\n```", mask_code=False).answer
    '7'
    """
    text = clean_text(response)
    code = code_spans(text) if mask_code else []
    echo = echo_spans(text, echoes)
    found = _extract(mask(text, code + echo))
    if found is not None:
        return found
    # Say why there is no answer: a box inside code or inside the echoed prompt is a named,
    # counted reason, so a policy that learns to hide answers there shows up in the metrics.
    if code and _extract(mask(text, echo)) is not None:
        return Extraction(None, "in_code_block")
    if echo and _extract(text) is not None:
        return Extraction(None, "prompt_echo")
    return Extraction(None, "no_answer")


def normalize_answer(answer: str) -> str:
    """Strip what surrounds an answer but is not part of it: math delimiters, markdown, a full stop.

    >>> normalize_answer(" $\\\\boxed{\\\\dfrac{1}{2}}$. ")
    '\\\\dfrac{1}{2}'
    >>> normalize_answer("**\\\\(x = 3\\\\)**")
    'x = 3'
    """
    a = answer.strip()
    for _ in range(4):  # a few layers: "**$\boxed{3}$**."
        before = a
        a = a.strip().strip("*").strip().rstrip(".,;").strip()
        a = _DOLLARS.sub("", a).strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if a.startswith(left) and a.endswith(right):
                a = a[2:-2].strip()
        if a.startswith("\\displaystyle"):
            a = a[len("\\displaystyle") :].strip()
        boxes = find_boxes(a)
        # "\boxed{3}" inside the answer line or a doubly boxed answer: keep the box's content.
        if boxes and a.startswith(("\\boxed", "\\fbox", "\\framebox")) and boxes[-1][1] == len(a) - 1:
            a = a[boxes[-1][0] : boxes[-1][1]].strip()
        if a == before:
            break
    return a


def reference_answer(reference: Any) -> str:
    """The final answer inside a reference as benchmark files store it.

    GSM8K keeps it after ``####`` (with thousands commas), Minerva inside ``\\boxed{}`` of the
    solution, AMC as a float such as ``27.0``.

    >>> reference_answer("She makes 9 * 2 = $18.\\n#### 1,800"), reference_answer(27.0)
    ('1800', '27')
    >>> reference_answer("so $s = \\\\boxed{1.6}$ cm")
    '1.6'
    """
    if isinstance(reference, bool):
        raise ValueError(f"reference must be a string or a number, got {reference!r}")
    if isinstance(reference, float):
        return str(int(reference)) if reference.is_integer() else repr(reference)
    if isinstance(reference, int):
        return str(reference)
    if not isinstance(reference, str):
        raise ValueError(f"reference must be a string or a number, got {type(reference).__name__}")
    ref = clean_text(reference)
    if "####" in ref:
        return ref.rsplit("####", 1)[1].strip().replace(",", "")
    box = _last_box(ref)
    if box is not None:
        return normalize_answer(box[0])
    return normalize_answer(ref)


def _unwrap(s: str) -> str:
    """Drop ``\\left``/``\\right`` and one pair of outer brackets, so "(1, 2)" reads as "1, 2"."""
    s = s.replace("\\left", "").replace("\\right", "").strip()
    if s.startswith("\\{") and s.endswith("\\}"):
        return s[2:-2]
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        depth = 0
        for i, c in enumerate(s):  # only if the first bracket closes at the very end
            depth += c in "([{"
            depth -= c in ")]}"
            if depth == 0 and i < len(s) - 1:
                return s
        return s[1:-1]
    return s


def _top_level_separators(s: str) -> int:
    depth = 0
    count = 0
    for c in s:
        if c in _OPENERS:
            depth += 1
        elif c in ")]}":
            depth = max(depth - 1, 0)
        elif c in ",;" and depth == 0:
            count += 1
    return count


def is_multi_valued(answer: str) -> bool:
    """Whether ``answer`` names several values: a list, tuple, set, interval or alternatives.

    >>> [is_multi_valued(a) for a in ["58,500", "(3,4]", "1 \\\\pm \\\\sqrt{19}", "f(1, 2)", "x = 3"]]
    [False, True, True, False, False]
    """
    s = _THOUSANDS.sub("0", answer)
    if _ALTERNATIVES.search(s):
        return True
    return _top_level_separators(_unwrap(s)) > 0


def is_hedged(answer: str, reference: str) -> bool:
    """An answer hedges when it offers several values for a reference that is a single value.

    Where the reference itself is a tuple, set, interval or list, several values are the answer's
    proper shape and math-verify compares them as such.
    """
    return is_multi_valued(answer) and not is_multi_valued(reference)
