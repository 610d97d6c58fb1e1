"""Benchmark decontamination for ``longrl curate``: word n-gram overlap, as open-r1's decontaminator.

A prompt is dropped when its question (:func:`.rules.question_of`) shares any word n-gram with a
reference set (default n = 8, the value open-r1 uses). Words are the whitespace-separated tokens
of :func:`.dedup.clean_latex`: lower case, LaTeX spacing and math delimiters removed, whitespace
collapsed, so ``$x\\,+\\,1$`` and ``x+1`` are one word. A text of fewer than n words has no
n-gram; it is compared whole instead: a short prompt matches a reference whose whole normalised
text is the same.

A reference item with images (a visual benchmark's question) is indexed by its pictures, not its
words: a prompt is dropped when one of its images shows the same pixels as one of them
(:func:`longrl.data.images.pixel_digest`: any lossless re-encoding matches; a resized or lossy copy
does not). Its text alone is not the problem: drawn problems share one instruction, and the same
question about another picture is another problem. A prompt's own text, images or not, is still
matched against the text-only reference items.

Boilerplate: an n-gram found in ``common`` (default 8) or more reference items never matches.
Answer-format phrases recur across competition sets ("where m and n are relatively prime
positive integers", Minerva's "format your answer as n \\times 10^x where n is to 2 decimal
places", HumanEval's instruction): indexed together, the shipped benchmarks hold 63 such 8-grams,
and a new problem whose only overlap is "the final answer can be written in the form
\\frac{m}{n}, where m and n are relatively prime positive integers" is kept, where open-r1's
rule (``common=0``) drops it. Every shipped problem still matches itself (its content n-grams are
rarer than that). The rule only knows phrases that recur in the index: a variant worded in fewer
than ``common`` items still matches (docs/curation.md has the figures).

The reference n-grams are held in one hash table (n-gram -> the first reference item holding
it), built once, so each prompt costs one lookup per n-gram: ~10k prompts against the ~2.3k
shipped benchmark problems take about a second.

A drop's ``rule`` is the name of the reference set, its ``match`` the benchmark item
(``name:id`` with the item's id when references are prompts, ``name[i]`` for plain texts) and its
``detail`` the shared n-gram. When an n-gram occurs in several sets, the set listed first wins.

    >>> from longrl.types import Prompt
    >>> refs = {"bench": ["What is the sum of the first one hundred positive integers?"]}
    >>> rows = [Prompt("p1", "Q: what is the sum of the first one hundred positive integers, doubled?", "", "math"),
    ...         Prompt("p2", "What is the sum of the first ten odd numbers?", "", "math")]
    >>> res = decontaminate(rows, refs, n=8)
    >>> [p.id for p in res.kept], [(d.prompt.id, d.rule, d.match) for d in res.dropped], res.per_benchmark
    (['p2'], [('p1', 'bench', 'bench[0]')], {'bench': 1})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from longrl.data.curate.dedup import clean_latex
from longrl.data.curate.rules import Drop, StageResult, question_of
from longrl.data.images import pixel_digest
from longrl.types import Prompt


def words(text: str) -> list[str]:
    """The words n-grams are made of (see the module docstring)."""
    return clean_latex(text).split()


def ngrams(ws: Sequence[str], n: int) -> list[str]:
    """The word n-grams of ``ws`` in order; for fewer than n words, the whole text as one."""
    if len(ws) < n:
        return [" ".join(ws)] if ws else []
    return [" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)]


@dataclass
class DecontamResult(StageResult):
    """:class:`StageResult` plus the number of prompts dropped per reference set (every set listed)."""

    per_benchmark: dict[str, int] = field(default_factory=dict)


class NgramIndex:
    """The n-grams of reference sets: ``lookup(text)`` -> (set name, item id, n-gram) or None.

    ``common``: an n-gram found in at least this many reference items is boilerplate and never
    matches; 0 lets every n-gram match (open-r1's rule).
    """

    def __init__(self, references: Mapping[str, Sequence[str | Prompt]], n: int = 8, common: int = 8):
        if n < 1:
            raise ValueError(f"n={n}: must be at least 1")
        if common < 0:
            raise ValueError(f"common={common}: must be >= 0 (0: no boilerplate n-grams)")
        self.n, self.common = n, common
        self.names = list(references)
        self._long: dict[str, tuple[str, str]] = {}  # n-gram -> (set, item id), first occurrence
        self._short: dict[str, tuple[str, str]] = {}  # whole text of < n words -> (set, item id)
        self._short_lengths: set[int] = set()  # word counts of the short items (2 or more words)
        self._images: dict[str, tuple[str, str]] = {}  # pixel digest -> (set, item id), first occurrence
        items_with: Counter[str] = Counter()  # n-gram -> how many reference items hold it
        for name, items in references.items():
            for i, item in enumerate(items):
                if isinstance(item, Prompt):
                    text = question_of(item)
                    item_id = item.id if item.id.startswith(f"{name}:") else f"{name}:{item.id}"
                    if item.images:
                        for image in item.images:
                            self._images.setdefault(pixel_digest(image), (name, item_id))
                        continue
                else:
                    text, item_id = str(item), f"{name}[{i}]"
                ws = words(text)
                table = self._long if len(ws) >= n else self._short
                if 1 < len(ws) < n:
                    self._short_lengths.add(len(ws))
                grams = set(ngrams(ws, n))
                items_with.update(grams)
                for g in grams:
                    table.setdefault(g, (name, item_id))
        self.boilerplate = sorted(g for g, c in items_with.items() if common and c >= common)
        for g in self.boilerplate:
            self._long.pop(g, None)
            self._short.pop(g, None)

    def lookup_images(self, images: Sequence[bytes] | None) -> tuple[str, str, str] | None:
        """The first reference item showing the same pixels as one of ``images``: (set, item id, "image N")."""
        if not self._images:  # no reference has images: nothing to decode
            return None
        for i, image in enumerate(images or ()):
            hit = self._images.get(pixel_digest(image))
            if hit is not None:
                return hit[0], hit[1], f"image {i + 1}"
        return None

    def lookup(self, text: str) -> tuple[str, str, str] | None:
        """The first reference hit: a shared n-gram, or a short reference item's whole text.

        A short item (fewer than n words) matches a text equal to it, and a longer text that holds
        its words in a row (the item with an instruction or a preamble around it).
        """
        ws = words(text)
        table = self._long if len(ws) >= self.n else self._short
        for g in ngrams(ws, self.n):
            hit = table.get(g)
            if hit is not None:
                return hit[0], hit[1], g
        for length in sorted(self._short_lengths):
            for i in range(len(ws) - length + 1):
                g = " ".join(ws[i:i + length])
                hit = self._short.get(g)
                if hit is not None:
                    return hit[0], hit[1], g
        return None


def decontaminate(prompts: Sequence[Prompt], references: Mapping[str, Sequence[str | Prompt]] | NgramIndex,
                  n: int = 8, common: int = 8) -> DecontamResult:
    """Drop prompts sharing a word n-gram with a reference set.

    ``references``: set name -> the benchmark's questions (strings, or prompts whose
    :func:`.rules.question_of` is read), or a prebuilt :class:`NgramIndex` (its own n and
    common win). ``n``: words per n-gram; ``common``: see :class:`NgramIndex`.
    """
    index = references if isinstance(references, NgramIndex) else NgramIndex(references, n, common)
    per = dict.fromkeys(index.names, 0)
    kept: list[Prompt] = []
    dropped: list[Drop] = []
    for p in prompts:
        image_hit = index.lookup_images(p.images)
        hit = image_hit or index.lookup(question_of(p))
        if hit is None:
            kept.append(p)
            continue
        name, item_id, gram = hit
        per[name] += 1
        if image_hit:
            detail = f"its {gram} shows the same pixels as an image of {item_id}"
        else:
            shown = gram if len(gram) <= 80 else gram[:77] + "..."
            what = f"{index.n}-gram" if len(gram.split()) >= index.n else "whole text"
            detail = f"shares {what} {shown!r} with {item_id}"
        dropped.append(Drop(p, "decontam", name, detail, item_id))
    return DecontamResult(kept, dropped, per)
