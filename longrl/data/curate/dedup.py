"""Exact and near-duplicate removal for ``longrl curate`` (k1.5 §2.1).

Two rules, in one pass over the prompts in input order; the first occurrence is kept and a drop
names the id it duplicates (``Drop.match``). Prompts with images are copies only when their images
are the same bytes too (text-rendered problems share one text):

* ``exact``: equal :func:`normalize_text` of the question (:func:`.rules.question_of`): lower
  case, LaTeX spacing (``\\,`` ``\\;`` ``\\!`` ``\\quad`` ``~`` ...), sizing (``\\left``,
  ``\\dfrac``) and math delimiters (``$``, ``\\(``) removed, whitespace collapsed and dropped
  next to symbols. Copies that differ only in whitespace or LaTeX spacing land here.
* ``near``: a MinHash/LSH candidate (``datasketch``; Jaccard of token ``shingle``-grams at least
  ``threshold``) that also passes two checks: the exact Jaccard of the two shingle sets is at
  least ``threshold``, and the two texts hold the same numbers in the same order. The number
  check keeps the same problem with other numbers ("a 3 by 4 rectangle" / "a 5 by 7
  rectangle"): a different problem with a different answer. The order matters too: Minerva's
  "x(0) = 1 and x'(0) = 0" and "x(0) = 0 and x'(0) = 1" hold one multiset of numbers (and a
  Jaccard of 0.89) but are two problems.

    >>> from longrl.types import Prompt
    >>> rows = [Prompt("a", "Find $x$ if $2x = 6$.", "3", "math"),
    ...         Prompt("b", "Find $x$  if $2x=6$ .", "3", "math"),
    ...         Prompt("c", "Find $x$ if $2x = 8$.", "4", "math")]
    >>> kept, dropped = deduplicate(rows)
    >>> [p.id for p in kept], [(d.prompt.id, d.rule, d.match) for d in dropped]
    (['a', 'c'], [('b', 'exact', 'a')])
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from longrl.data.curate.rules import Drop, StageResult, question_of
from longrl.data.images import images_digest
from longrl.types import Prompt

# LaTeX spacing commands and "~" (a non-breaking space); not after a backslash, so "\\," stays.
_SPACING = re.compile(r"(?<!\\)\\(?:[,;:! ]|q?quad(?![a-z])|(?:en|thin|med|thick|negthin)space(?![a-z])"
                      r"|[hv]space\*?\s*\{[^{}]*\}|kern\s*-?[\d.]+\s*[a-z]{2})|~")
_SIZING = re.compile(r"\\(?:left|right|big|bigg|Big|Bigg)(?![a-zA-Z])|\\displaystyle|\\textstyle")
_DELIMITERS = re.compile(r"\$|(?<!\\)\\[()]")
_THOUSANDS = re.compile(r"(?<=\d)(?:,|\{,\})(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def clean_latex(text: str) -> str:
    """Lower case, without LaTeX spacing, sizing and math delimiters, whitespace collapsed.

    >>> clean_latex("Let $x\\\\,=\\\\left(\\\\dfrac{1}{2}\\\\right)$, \\\\quad  find $y$.")
    'let x=(\\\\frac{1}{2}), find y.'
    """
    s = _SIZING.sub(" ", text)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SPACING.sub(" ", s)
    s = _DELIMITERS.sub(" ", s).lower()
    s = " ".join(s.split())
    return re.sub(r" (?=[^\w\s\\])|(?<=[^\w\s]) (?=[^\w\s\\])", "", s)


def normalize_text(text: str) -> str:
    """The exact-duplicate key: :func:`clean_latex`, then no space next to a symbol.

    >>> normalize_text("Find  $x + y$ , if $x=1$.") == normalize_text("find $x+y$, if $x = 1$ .")
    True
    """
    s = clean_latex(text)
    return re.sub(r" (?=[^\w])|(?<=[^\w]) ", "", s)


def numbers_of(text: str) -> list[str]:
    """The numbers of a normalised text in order ("1,000" reads as 1000).

    >>> numbers_of(normalize_text("A 3 by 4 grid of 1,000 cells"))
    ['3', '4', '1000']
    """
    return _NUMBER.findall(_THOUSANDS.sub("", text))


def shingles(text: str, k: int) -> set[str]:
    """Token k-grams of a normalised text; tokens are words, numbers, LaTeX commands and symbols."""
    tokens = re.findall(r"\\[a-z]+|\w+|[^\w\s]", text)
    if len(tokens) <= k:
        return {" ".join(tokens)}
    return {" ".join(tokens[i:i + k]) for i in range(len(tokens) - k + 1)}


def deduplicate(prompts: Sequence[Prompt], threshold: float = 0.85, *, near: bool = True, shingle: int = 3,
                num_perm: int = 128, seed: int = 1) -> StageResult:
    """Drop exact and near duplicates of earlier prompts (see the module docstring).

    ``threshold``: Jaccard similarity of the shingle sets above which two texts with equal
    numbers are near copies, in (0, 1]; ``near=False`` keeps only the exact rule; ``shingle``:
    tokens per shingle; ``num_perm`` and ``seed``: the MinHash permutations (more permutations,
    fewer missed candidates). Deterministic: the same input gives the same drops.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold}: must be in (0, 1]")
    if shingle < 1:
        raise ValueError(f"shingle={shingle}: must be at least 1")
    # an image prompt's question is its text and its images: equal texts over other images differ
    keys = [normalize_text(question_of(p)) + images_digest(p.images) for p in prompts]
    images = [images_digest(p.images) for p in prompts]
    first: dict[str, int] = {}  # normalised text -> position of the kept prompt it resolves to
    kept: list[Prompt] = []
    dropped: list[Drop] = []
    if near:
        from datasketch import MinHash, MinHashLSH

        grams = [shingles(normalize_text(question_of(p)), shingle) for p in prompts]
        # One bulk call shares the permutations, which dominate the cost of a MinHash per row.
        hashes = MinHash.bulk([[g.encode() for g in sorted(gs)] for gs in grams], num_perm=num_perm, seed=seed)
        nums = [numbers_of(normalize_text(question_of(p))) for p in prompts]
        # LSH only proposes candidates (the exact Jaccard decides); it needs a threshold below 1.
        lsh = MinHashLSH(threshold=min(threshold, 0.95), num_perm=num_perm)
    for i, (p, key) in enumerate(zip(prompts, keys)):
        if key in first:
            j = first[key]
            dropped.append(Drop(p, "dedup", "exact", f"same normalised text as {prompts[j].id}", prompts[j].id))
            continue
        first[key] = i
        if near:
            match = None
            for j in sorted(lsh.query(hashes[i])):
                sim = len(grams[i] & grams[j]) / len(grams[i] | grams[j])
                if sim >= threshold and nums[i] == nums[j] and images[i] == images[j]:
                    match = (j, sim)
                    break
            if match is not None:
                j, sim = match
                first[key] = j  # a later exact copy of this row names the kept row
                dropped.append(Drop(p, "dedup", "near", f"near copy of {prompts[j].id} (Jaccard {sim:.2f}, "
                                    "same numbers in the same order)", prompts[j].id))
                continue
            lsh.insert(i, hashes[i])
        kept.append(p)
    return StageResult(kept, dropped)
