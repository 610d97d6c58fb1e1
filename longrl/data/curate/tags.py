"""Domain tags and per-tag caps for ``longrl curate`` (k1.5 §2.1: a tagging system by domain and
discipline keeps the prompt set balanced across subjects).

:func:`domain_of` reads the tag from the row's own fields when it has one (``subject``, ``type``,
``data_source``, ``ability`` in ``Prompt.tags`` or ``Prompt.extra``, in that order), mapped onto
the domains below; otherwise a small keyword rule set scores the question and the best-scoring
domain wins (ties: the earlier domain in :data:`DOMAINS`). A ``subject``/``type`` value that maps
to no domain ("Introduction to Astronomy") becomes a tag of its own, in snake case;
``data_source``/``ability`` values that name no domain ("math") are skipped.

:func:`cap_tags` keeps the first N prompts of each tag (in input order); the rest are dropped
with rule ``tag_cap``.

    >>> from longrl.types import Prompt
    >>> rows = [Prompt("1", "How many ways can 3 books be arranged on a shelf?", "6", "math"),
    ...         Prompt("2", "Find the area of a circle of radius 2.", "4\\\\pi", "math"),
    ...         Prompt("3", "What is the probability that a fair coin lands heads twice?", "1/4", "math")]
    >>> [domain_of(p) for p in rows]
    ['counting_probability', 'geometry', 'counting_probability']
    >>> res = cap_tags(rows, 1)
    >>> [p.id for p in res.kept], res.before, res.after
    (['1', '2'], {'counting_probability': 2, 'geometry': 1}, {'counting_probability': 1, 'geometry': 1})
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from longrl.data.curate.rules import Drop, StageResult, question_of
from longrl.types import Prompt

TAG = "domain"  # the key of Prompt.tags that tag_prompts sets
FIELDS = ("subject", "type", "data_source", "ability")  # read from Prompt.tags, then Prompt.extra
DOMAINS = ("code", "calculus", "precalculus", "counting_probability", "number_theory", "geometry", "algebra",
           "arithmetic", "other")

# Field values (lower case, a trailing "(course 18.03 ...)" removed) that name a domain.
_FIELD_VALUES = {
    "algebra": "algebra", "intermediate algebra": "algebra", "intermediate_algebra": "algebra",
    "prealgebra": "arithmetic", "pre-algebra": "arithmetic", "arithmetic": "arithmetic",
    "geometry": "geometry", "number theory": "number_theory", "number_theory": "number_theory",
    "counting & probability": "counting_probability", "counting_and_probability": "counting_probability",
    "combinatorics": "counting_probability", "probability": "counting_probability",
    "precalculus": "precalculus", "trigonometry": "precalculus", "calculus": "calculus",
    "code": "code", "coding": "code", "programming": "code",
}
# data_source values name a domain by a part of them (verl writes "openai/gsm8k", "codecontests").
_SOURCE_PARTS = (("gsm8k", "arithmetic"), ("humaneval", "code"), ("mbpp", "code"), ("code", "code"),
                 ("apps", "code"), ("leetcode", "code"), ("taco", "code"))
_COARSE = {"math", "mathematics", "maths", "stem", "reasoning", "general", ""}

# Keyword rules: each hit of a domain's pattern scores one point for it.
_KEYWORDS: dict[str, re.Pattern[str]] = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in {
    "code": r"\bdef \w+\(|```|\bwrite a (?:python )?(?:function|program)\b|\bimplement\b|\binput format\b"
            r"|\bstdin\b|\breturn(?:s)? (?:the|a|true|false)\b",
    "calculus": r"\bderivative|\bintegra(?:l|te)\b|\\int(?![a-z])|\\lim(?![a-z])|\blimit\b|\bdifferentiab|\bd/dx\b|\\frac\{d"
                r"|\bdifferential equation|\bantiderivative|\bconverge|\btaylor\b|\bmaxim(?:um|ize) .* f'\b",
    "precalculus": r"\\(?:sin|cos|tan|cot|sec|csc|arcsin|arccos|arctan)\b|\b(?:sin|cos|tan)\b|\btrigonometr"
                   r"|\bradians?\b|\bcomplex number|\bvector|\bmatri(?:x|ces)\b|\\begin\{[pb]matrix\}"
                   r"|\bdeterminant\b|\bpolar\b|\\operatorname\{cis\}|\bcis\b",
    "counting_probability": r"\bprobabilit|\bhow many (?:ways|different|distinct|arrangements|paths|subsets)"
                            r"|\barrangements?\b|\bpermutations?\b|\bcombinations?\b|\\binom|\\dbinom|\bdice\b"
                            r"|\bdie\b|\bcoins?\b|\bat random\b|\brandomly\b|\bexpected value\b|\bcommittee",
    "number_theory": r"\bprimes?\b|\bdivisors?\b|\bdivisible\b|\bremainder\b|\bmodulo\b|\\pmod|\\mod\b|\bgcd\b"
                     r"|\blcm\b|\bgreatest common (?:divisor|factor)\b|\bleast common multiple\b|\bdigits?\b|\\equiv"
                     r"|\bmultiples? of\b|\bfactors\b|\bdivides\b"
                     r"|\b(?:units|tens|last) digit|\bbase \$?\d|\bbase[- ](?:two|six|eight|ten)\b|\bcongruen|\bfactorial",
    "geometry": r"\btriangles?\b|\\triangle|\bcircles?\b|\bangles?\b|\\angle|\bpolygon|(?<!perfect )\bsquares?\b(?! root)"
                r"|\brectangles?\b|\bperimeter\b|\bradius\b|\bdiameter\b|\bchord\b|\bhexagon|\bpentagon"
                r"|\bsphere\b|\bcube\b|\bcylinder\b|\bcone\b|\bparallelogram|\btrapezoid|\binscribed"
                r"|\bcircumscribed|\[asy\]|\bperpendicular\b|\bhypotenuse\b|\\overline\{|\bvolume\b|\barea\b",
    "algebra": r"\bequations?\b|\bsolve\b|\bpolynomial|\bquadratic|\broots?\b|\bf\(x\)|\bfunction|\binequalit"
               r"|\\sqrt|\bsimplify\b|\bexpand\b|\bvariables?\b|\bslope\b|\blog|\\log|\bexponent"
               r"|\b(?:arithmetic|geometric) (?:sequence|series|progression)|\bsequence\b|\bx\^|\by\s*=|\bevaluate\b",
    "arithmetic": r"\bdollars?\b|\\\$|\bcents?\b|\bcosts?\b|\bprices?\b|\bspends?\b|\bbuys?\b|\bsells?\b"
                  r"|\bbought\b|\bsold\b|\bper (?:hour|day|week|month)\b|\bminutes?\b|\bhours?\b|\bpercent"
                  r"|\\%|\bmiles?\b|\baverage\b|\bmean\b|\bmedian\b|\bmixed number\b|\brounded?\b",
}.items()}


# A LaTeX command, or math that is more than a dollar amount ("$x$", "$2x+1$"; not "$5 each").
_LATEX = re.compile(r"\\[a-zA-Z]|\$[^$\s]*[a-zA-Z^_=]")


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_") or "other"


def _field_domain(name: str, value: object) -> str | None:
    if not isinstance(value, str):
        return None
    v = re.sub(r"\s*\(.*\)\s*$", "", value).strip().lower()
    if v in _COARSE:
        return None
    if v in _FIELD_VALUES:
        return _FIELD_VALUES[v]
    if name in ("data_source", "ability"):
        return next((dom for part, dom in _SOURCE_PARTS if part in v), None)
    return keyword_domain(v, default=None) or _slug(v)


def keyword_domain(text: str, default: str | None = "other") -> str | None:
    """The domain whose keywords hit ``text`` most often. With no hit and ``default`` not None: a
    question with LaTeX is "algebra", a plain-text one with numbers a word problem ("arithmetic"),
    anything else ``default``.

    >>> keyword_domain("Find all real $x$ with $\\\\sin x = \\\\cos x$ in $[0, \\\\pi]$.")
    'precalculus'
    """
    scores = {dom: len(pat.findall(text)) for dom, pat in _KEYWORDS.items()}
    best = max(DOMAINS[:-1], key=lambda d: (scores[d], -DOMAINS.index(d)))
    if scores[best]:
        return best
    if default is None:
        return None
    if _LATEX.search(text):
        return "algebra"  # formulas and no keyword: MATH files most such problems under (intermediate) algebra
    return "arithmetic" if re.search(r"\d", text) else default


def domain_of(p: Prompt) -> str:
    """The prompt's domain tag: ``tags["domain"]`` when set, else its fields, else keywords."""
    if isinstance(p.tags.get(TAG), str) and p.tags[TAG]:
        return p.tags[TAG]
    if p.task == "code":
        return "code"
    for source in (p.tags, p.extra):
        for name in FIELDS:
            dom = _field_domain(name, source.get(name)) if isinstance(source, dict) else None
            if dom:
                return dom
    return keyword_domain(question_of(p)) or "other"


def tag_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    """Copies of the prompts with ``tags["domain"]`` set (the inputs are not changed)."""
    return [dataclasses.replace(p, tags={**p.tags, TAG: domain_of(p)}) for p in prompts]


def tag_counts(prompts: Sequence[Prompt]) -> dict[str, int]:
    """Prompts per domain tag, most frequent first (ties by name)."""
    counts: dict[str, int] = {}
    for p in prompts:
        d = domain_of(p)
        counts[d] = counts.get(d, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class TagResult(StageResult):
    """:class:`StageResult` plus the prompts per tag before and after the caps."""

    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)


def cap_tags(prompts: Sequence[Prompt], caps: int | Mapping[str, int] | None = None) -> TagResult:
    """Tag every prompt and keep the first N of each tag.

    ``caps``: one N for every tag, or tag -> N (tags not named are not capped); None or 0: no cap.
    The kept prompts carry ``tags["domain"]``.
    """
    if isinstance(caps, Mapping):
        bad = {t: n for t, n in caps.items() if not isinstance(n, int) or n < 0}
    else:
        bad = {"*": caps} if caps is not None and (not isinstance(caps, int) or caps < 0) else {}
    if bad:
        raise ValueError(f"tag caps must be integers >= 0, got {bad}")
    tagged = tag_prompts(prompts)
    seen: dict[str, int] = {}
    kept: list[Prompt] = []
    dropped: list[Drop] = []
    for p in tagged:
        tag = p.tags[TAG]
        cap = caps.get(tag) if isinstance(caps, Mapping) else caps
        seen[tag] = seen.get(tag, 0) + 1
        if cap and seen[tag] > cap:
            dropped.append(Drop(p, "tags", "tag_cap", f"tag {tag!r} is over its cap of {cap}"))
        else:
            kept.append(p)
    return TagResult(kept, dropped, tag_counts(tagged), tag_counts(kept))
