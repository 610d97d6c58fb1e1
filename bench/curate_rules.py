"""Figures for the rule stages of ``longrl curate`` (docs/curation.md, "Rule stages").

    python bench/curate_rules.py                      # everything below, ~30 s on 2 cores
    python bench/curate_rules.py --draw-sample        # print a fresh 50-row format sample to label

1. The rule stages (format filter, dedup, tags) on the shipped math sets together: MATH-500,
   AIME 2024, AMC 2023, GSM8K and Minerva Math (``longrl.eval.benchmarks.load_benchmark``).
2. Decontamination between the shipped sets: each set against each other set and against the
   union of the others, with the default boilerplate rule (``common=8``) and with every n-gram
   matching (``common=0``, open-r1's rule), n = 8.
3. Precision of the format detectors on the hand-labelled sample in
   ``docs/curation_format_sample.jsonl``: every row flagged in the shipped sets, topped up to 50
   with flagged rows of ``bench/data/curate_format_crafted.jsonl`` (rows written for this check in
   the styles of public math sets, clearly not benchmark data: first its ``holdout`` part, written
   after the rules were last changed, then a seeded draw from its ``dev`` part). The labels are a
   person's reading of each row; the script only checks that each sampled row is still flagged
   with the labelled rule and counts the labels. It also prints the detectors' hit rate on both
   crafted parts against the intent each row was written with.
4. Speed: dedup and decontamination of 10,000 prompts (the shipped problems with their numbers
   changed) against the ~2.3k shipped benchmark problems.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longrl.data.curate import (  # noqa: E402
    NgramIndex,
    cap_tags,
    decontaminate,
    deduplicate,
    detect_format,
    format_filter,
    question_of,
)
from longrl.data.curate.rules import reference_text  # noqa: E402
from longrl.data.math import make_math_prompt  # noqa: E402
from longrl.eval.benchmarks import load_benchmark  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETS = {"math500": "MATH-500", "aime24": "AIME 2024", "amc23": "AMC 2023", "gsm8k": "GSM8K",
        "minerva_math": "Minerva"}
CRAFTED = ROOT / "bench" / "data" / "curate_format_crafted.jsonl"
SAMPLE = ROOT / "docs" / "curation_format_sample.jsonl"
SAMPLE_SIZE = 50
FRESH = [
    ("A jar holds 4 red and 6 blue marbles. Two marbles are drawn without replacement. The probability that "
     "both are red can be written as $\\frac{m}{n}$, where $m$ and $n$ are relatively prime positive integers. "
     "Find $m+n$."),
    ("A point is chosen at random inside the square with vertices $(0,0)$, $(2,0)$, $(2,2)$ and $(0,2)$. The "
     "probability that it lies within 1 of the origin is $\\frac{\\pi}{k}$. The final answer can be written in "
     "the form $\\frac{m}{n}$, where $m$ and $n$ are relatively prime positive integers. What is $m+n$ for $k/1$?"),
    ("The area bounded by $y=x^2$ and $y=4$ is $a\\sqrt{b}$ or a fraction $\\frac{a}{b}$ where $a$ and $b$ are "
     "positive integers and $b$ is not divisible by the square of any prime. Find $a+b$."),
]
INTENT = {"mc": "multiple_choice", "tf": "true_false", "proof": "proof", "none": None}


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rule_stages(sets: dict) -> None:
    rows = [p for ps in sets.values() for p in ps]
    print(f"## Rule stages on the shipped math sets together ({len(rows)} prompts)\n")
    fmt = format_filter(rows)
    dd = deduplicate(fmt.kept)
    tagged = cap_tags(dd.kept, 300)
    out = []
    for stage, res in (("format", fmt), ("dedup", dd), ("tags (cap 300)", tagged)):
        per_set = Counter(d.prompt.tags.get("source") for d in res.dropped)
        out.append([stage, len(res.kept) + len(res.dropped), len(res.dropped),
                    ", ".join(f"{r} {n}" for r, n in res.counts.items()) or "-",
                    ", ".join(f"{SETS.get(s, s)} {n}" for s, n in per_set.items()) or "-"])
    print(table(["stage", "in", "dropped", "per rule", "per set"], out) + "\n")
    for d in fmt.dropped + dd.dropped:
        print(f"- {d.stage}/{d.rule}: `{d.prompt.id}`: {d.detail}")
    print("\nDomain tags (fields first, keywords otherwise), before the cap and after it:\n")
    print(table(["tag", "before", "after cap 300"],
                [[t, n, tagged.after.get(t, 0)] for t, n in tagged.before.items()]) + "\n")
    math500 = sets["math500"]
    subject = {"Algebra": "algebra", "Intermediate Algebra": "algebra", "Prealgebra": "arithmetic",
               "Geometry": "geometry", "Number Theory": "number_theory",
               "Counting & Probability": "counting_probability", "Precalculus": "precalculus"}
    from longrl.data.curate.tags import keyword_domain

    agree = sum(keyword_domain(question_of(p)) == subject[p.tags["subject"]] for p in math500)
    print(f"Keyword rules alone on MATH-500 (its `subject` field hidden) agree with the subject on "
          f"{agree}/{len(math500)} = {agree / len(math500):.1%} of problems.\n")


def decontamination(sets: dict, n: int) -> None:
    print(f"## Decontamination between the shipped sets (word {n}-grams)\n")
    names = list(sets)
    for common in (8, 0):
        rule = "n-grams in 8+ reference items ignored (default)" if common else "every n-gram matches (open-r1)"
        print(f"### {rule}\n")
        rows, examples = [], []
        for a in names:
            row = [f"{SETS[a]} ({len(sets[a])})"]
            for b in names:
                if a == b:
                    row.append("-")
                    continue
                res = decontaminate(sets[a], {b: sets[b]}, n=n, common=common)
                row.append(len(res.dropped))
            others = {b: sets[b] for b in names if b != a}
            res = decontaminate(sets[a], others, n=n, common=common)
            row.append(len(res.dropped))
            examples += res.dropped
            rows.append(row)
        print("Rows: the set decontaminated; columns: the reference set.\n")
        print(table(["set \\ against"] + [SETS[b] for b in names] + ["all others"], rows) + "\n")
        for d in examples:
            print(f"- `{d.prompt.id}` {d.detail}")
        print()
    # New problems (written for this check) that share only an answer-format phrase with the sets.
    refs = {**sets, "humaneval": load_benchmark("humaneval")}
    fresh = [make_math_prompt(f"new{i}", q, "1", "crafted") for i, q in enumerate(FRESH, 1)]
    rows = []
    for common in (8, 0):
        res = decontaminate(fresh, NgramIndex(refs, n=n, common=common))
        hits = {d.prompt.id: d.detail for d in res.dropped}
        rows.append([f"common={common}"] + [hits.get(p.id, "kept") for p in fresh])
    print("New problems against all shipped sets (HumanEval included), written for this check:\n")
    for p in fresh:
        print(f"- `{p.id}`: {p.tags['problem']}")
    print()
    print(table(["rule"] + [p.id for p in fresh], rows) + "\n")
    # Recall check: every benchmark against all shipped sets, itself included, must lose every problem.
    index = NgramIndex(sets, n=n)
    self_hits = {SETS[a]: f"{len(decontaminate(ps, index).dropped)}/{len(ps)}" for a, ps in sets.items()}
    print(f"Each set against all five (itself included; boilerplate: {len(index.boilerplate)} n-grams): "
          + ", ".join(f"{k} {v}" for k, v in self_hits.items()) + "\n")


def crafted_rows() -> list[dict]:
    return [json.loads(line) for line in CRAFTED.read_text(encoding="utf-8").splitlines() if line.strip()]


def flagged_pool(sets: dict) -> list[dict]:
    """Every flagged row: the shipped sets first, then the crafted holdout, then the crafted dev rows."""
    pool = []
    for ps in sets.values():
        for d in format_filter(ps).dropped:
            pool.append({"id": d.prompt.id, "source": d.prompt.tags.get("source"), "question": question_of(d.prompt),
                         "reference": reference_text(d.prompt), "rule": d.rule, "detail": d.detail})
    for part in ("holdout", "dev"):
        for r in crafted_rows():
            if r["id"].startswith("holdout:") != (part == "holdout"):
                continue
            hit = detect_format(r["problem"], r["answer"])
            if hit:
                pool.append({"id": r["id"], "source": f"crafted {part} ({r['style']})", "question": r["problem"],
                             "reference": r["answer"], "rule": hit[0], "detail": hit[1]})
    return pool


def draw_sample(sets: dict) -> list[dict]:
    pool = flagged_pool(sets)
    fixed = [r for r in pool if not r["id"].startswith("crafted:")]
    dev = [r for r in pool if r["id"].startswith("crafted:")]
    need = max(0, SAMPLE_SIZE - len(fixed))
    return fixed[:SAMPLE_SIZE] + random.Random(0).sample(dev, min(need, len(dev)))


def crafted_recall() -> None:
    print("Detectors on the crafted rows against the intent each was written with:\n")
    out = []
    for part in ("dev", "holdout"):
        rows = [r for r in crafted_rows() if r["id"].startswith("holdout:") == (part == "holdout")]
        pos = [r for r in rows if INTENT[r["intended"]]]
        neg = [r for r in rows if not INTENT[r["intended"]]]
        hit = sum(bool(detect_format(r["problem"], r["answer"])) for r in pos)
        false = [r["id"] for r in neg if detect_format(r["problem"], r["answer"])]
        out.append([part, f"{hit}/{len(pos)}", f"{len(false)}/{len(neg)}", ", ".join(false) or "-"])
    print(table(["part", "meant to be dropped: flagged", "meant to be kept: flagged", "which"], out) + "\n")


def precision(sets: dict) -> None:
    print(f"## Format detectors: precision on the hand-labelled sample ({SAMPLE.relative_to(ROOT)})\n")
    if not SAMPLE.is_file():
        print("(no labelled sample yet: run with --draw-sample, label it, save it there)\n")
        return
    sample = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    current = {r["id"]: r for r in flagged_pool(sets)}
    stale = [r["id"] for r in sample if r["id"] not in current or current[r["id"]]["rule"] != r["rule"]]
    per_rule: dict[str, Counter] = {}
    for r in sample:
        per_rule.setdefault(r["rule"], Counter())[r["label"]] += 1
    total = Counter(r["label"] for r in sample)
    rows = [[rule, c["correct"] + c["incorrect"], c["correct"], f"{c['correct'] / (c['correct'] + c['incorrect']):.1%}"]
            for rule, c in per_rule.items()]
    n = total["correct"] + total["incorrect"]
    rows.append(["**all**", n, total["correct"], f"**{total['correct'] / n:.1%}**"])
    print(table(["rule", "sampled", "labelled correct", "precision"], rows) + "\n")
    by_source = Counter(re.sub(r" \(.*", "", r["source"]) for r in sample)
    print("Sample drawn from: " + ", ".join(f"{s} {k}" for s, k in by_source.items()) + ".")
    for r in sample:
        if r["label"] != "correct":
            print(f"- incorrect: `{r['id']}` ({r['rule']}): {r['why']}")
    print(f"Rows no longer flagged with the labelled rule by the current rules: {stale or 'none'}\n")
    crafted_recall()


def speed(sets: dict, n: int) -> None:
    base = [p for ps in sets.values() for p in ps]
    refs = {**sets, "humaneval": load_benchmark("humaneval")}
    n_refs = sum(len(v) for v in refs.values())
    rng = random.Random(0)
    prompts = []
    for i in range(10_000):
        p = base[i % len(base)]
        problem = re.sub(r"\d+", lambda m: str(int(m.group(0)) + rng.randint(1, 9)), question_of(p))
        prompts.append(type(p)(f"s{i}", problem, p.reference, p.task, tags={"problem": problem}))
    t0 = time.perf_counter()
    dd = deduplicate(prompts)
    t1 = time.perf_counter()
    index = NgramIndex(refs, n=n)
    t2 = time.perf_counter()
    res = decontaminate(prompts, index)
    t3 = time.perf_counter()
    print("## Speed\n")
    print(f"10,000 prompts (the shipped problems, cycled, each number moved by 1-9) on "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}:\n")
    print(table(["stage", "seconds", "result"], [
        ["dedup (exact + MinHash LSH, 128 permutations)", f"{t1 - t0:.1f}",
         f"{len(dd.dropped)} dropped ({', '.join(f'{k} {v}' for k, v in dd.counts.items())})"],
        [f"decontam: index of {n_refs} benchmark problems", f"{t2 - t1:.2f}", f"{len(index.boilerplate)} boilerplate n-grams"],
        [f"decontam: 10,000 prompts, {n}-grams", f"{t3 - t2:.2f}", f"{len(res.dropped)} dropped"],
    ]) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ngram", type=int, default=8)
    ap.add_argument("--draw-sample", action="store_true", help="print the unlabelled 50-row sample as JSONL and stop")
    ap.add_argument("--skip-speed", action="store_true")
    a = ap.parse_args(argv)
    sets = {name: load_benchmark(name) for name in SETS}
    if a.draw_sample:
        for r in draw_sample(sets):
            print(json.dumps(r, ensure_ascii=False))
        return 0
    rule_stages(sets)
    decontamination(sets, a.ngram)
    precision(sets)
    if not a.skip_speed:
        speed(sets, a.ngram)
    return 0


if __name__ == "__main__":
    sys.exit(main())
