"""Test-case generation with CYaRon (k1.5 §2.3.5), every program run in the sandbox.

For each problem: run its generator programs (Python using CYaRon, written by a person or by a
model prompted with :func:`generator_prompt`) ``n_cases`` times each, one test input per run with
a distinct seed; run up to ``n_solutions`` ground-truth solutions on every input. A case is kept
when at least 7 of 10 solutions agree on its output (token-wise), and that majority output
becomes the expected one. A generator counts when at least ``min_valid`` (40) of its 50 cases are
kept; a problem whose generators all fall short is dropped. A problem is kept when at least 9 of
10 solutions pass all its kept cases. With fewer than 10 solutions the thresholds scale:
agreement ``ceil(0.7 n)``, passing ``floor(0.9 n)`` (so one wrong solution of 5 is tolerated,
as one of 10 is in the paper).

Problem file (JSONL), one problem a line::

    {"id": "sum", "statement": "...", "generators": ["from cyaron import *\\n..."],
     "solutions": ["print(sum(...))", {"lang": "cpp", "code": "..."}],
     "time_limit": 2.0}

``longrl sandbox testgen --problems FILE --out FILE`` writes the kept problems as code prompts
(``reference.tests`` of stdin/stdout pairs) and prints the funnel.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longrl.data.rows import load_rows
from longrl.errors import UserError

GENERATOR_PROMPT = '''\
You write test-case generators for a programming problem. Write one Python 3 program that prints
ONE random, valid test input for the problem below to standard output, in exactly the input
format the statement describes, and nothing else. Use the CYaRon library (already installed);
do not read any input and do not set a random seed (the harness seeds Python's `random` before
each run). Cover the whole range of the constraints: small, edge and maximal cases.

CYaRon essentials (`from cyaron import *`):
- randint(a, b): a random integer in [a, b]; choice(seq); random.random()
- Vector.random(n, [(lo, hi)]): n DISTINCT random ints in [lo, hi] as [[x], ...] (mode 0, the
  default); Vector.random(n, [(lo, hi)], 1): n ints that may repeat; Vector.random(n, [(lo, hi),
  (lo, hi)]): n distinct pairs [[x, y], ...]; Vector.random(n, [(lo, hi)], 2): n floats
- String.random(length, charset="abc"): a random string; String.random_sentence(words)
- Sequence(lambda i, f: 2 * i + 1).get(1, n): a sequence defined by a formula
- Graph.tree(n), Graph.binary_tree(n), Graph.graph(n, m, weight_limit=(1, 10),
  self_loop=False, repeated_edges=False), Graph.DAG(n, m), Graph.UDAG(n, m): graphs with
  vertices 1..n; print with g.to_str(output=Edge.unweighted_edge) (one "u v" a line) or
  g.to_str() ("u v w" a line)
Print with print(); join lists with " ".join(map(str, xs)).

Example, for "the first line has n (1 <= n <= 1000), the second n integers in [-10^9, 10^9]":

```python
from cyaron import *
n = randint(1, 1000)
print(n)
print(" ".join(str(randint(-10**9, 10**9)) for _ in range(n)))
```

Problem:
{statement}

Answer with the program in one ```python code block.
'''


def generator_prompt(statement: str) -> str:
    """The prompt that asks a model for a CYaRon generator of ``statement``."""
    return GENERATOR_PROMPT.replace("{statement}", statement.strip())


@dataclass
class Problem:
    """One problem to generate tests for (a row of the problem file)."""

    id: str
    generators: list[str]
    solutions: list[tuple[str, str]]  # (language, code)
    statement: str = ""
    time_limit: float = 2.0  # wall seconds per run of a generator or a solution
    extra: dict[str, Any] = field(default_factory=dict)  # other fields, copied to the output


def _problem(line: int, row: dict[str, Any]) -> Problem:
    pid = row.get("id")
    if not isinstance(pid, (str, int)):
        raise ValueError("missing 'id'")
    gens = row.get("generators", [row["generator"]] if "generator" in row else None)
    if not isinstance(gens, list) or not gens or not all(isinstance(g, str) and g.strip() for g in gens):
        raise ValueError("'generators' must be a non-empty list of program texts")
    gens = [_unfence(g) for g in gens]  # a model's answer to generator_prompt() may be used as is
    sols = []
    for i, s in enumerate(row.get("solutions") or []):
        lang, code = ("python", s) if isinstance(s, str) else (s.get("lang", "python"), s.get("code")) \
            if isinstance(s, dict) else (None, None)
        if lang not in ("python", "cpp") or not isinstance(code, str) or not code.strip():
            raise ValueError(f"solutions[{i}] must be code or {{'lang': 'python'|'cpp', 'code': str}}")
        sols.append((lang, code))
    if not sols:
        raise ValueError("'solutions' must list at least one ground-truth solution")
    tl = row.get("time_limit", 2.0)
    if not isinstance(tl, (int, float)) or not 0 < tl <= 60:
        raise ValueError("'time_limit' must be seconds in (0, 60]")
    known = {"id", "generators", "generator", "solutions", "statement", "time_limit"}
    return Problem(str(pid), gens, sols, str(row.get("statement", "")), float(tl),
                   {k: v for k, v in row.items() if k not in known})


def _unfence(text: str) -> str:
    if "```" not in text:
        return text
    from longrl.rewards.code import extract_code

    found = extract_code(text)
    if found is None:
        raise ValueError("a generator has a code fence but no complete code block")
    return found[1]


def load_problems(path: str | Path, skip_invalid: bool = False) -> list[Problem]:
    """Read a problem file; malformed rows stop with ``file:line: reason`` (see rows.py)."""
    problems, _ = load_rows(path, _problem, skip_invalid=skip_invalid)
    if not problems:
        raise UserError(f"{path}: no problems")
    return problems


def _tokens(out: bytes) -> tuple[str, ...]:
    return tuple(out.decode("utf-8", "replace").split())


def cyaron_packages() -> list[str]:
    """``cyaron`` and the packages it requires (transitively), to be bound into the sandbox."""
    import importlib.metadata as md
    import re
    from importlib.machinery import PathFinder  # not importlib.util.find_spec: colorful replaces
    # its own sys.modules entry with an object that has no __spec__

    if PathFinder.find_spec("cyaron") is None:
        raise UserError("test generation needs CYaRon: pip install 'longrl[code]' (or pip install cyaron)")
    out, todo = [], ["cyaron"]
    while todo:
        name = todo.pop()
        mod = name.lower().replace("-", "_")
        if mod in out or PathFinder.find_spec(mod) is None:
            continue
        out.append(mod)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            reqs = []
        todo += [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in reqs if "extra ==" not in r]
    return out


@dataclass
class Funnel:
    problems_in: int = 0
    generators_in: int = 0
    generators_ok: int = 0  # produced >= min_valid valid cases
    problems_with_cases: int = 0  # at least one such generator
    problems_kept: int = 0  # >= 90% of solutions pass every kept case

    def lines(self) -> str:
        return (f"problems in: {self.problems_in}\n"
                f"generators: {self.generators_in} -> {self.generators_ok} produced enough valid cases\n"
                f"problems with valid cases: {self.problems_with_cases}\n"
                f"problems kept: {self.problems_kept}")


def generate_tests(problems: list[Problem], *, n_cases: int = 50, n_solutions: int = 10, min_valid: int = 40,
                   agree_frac: float = 0.7, pass_frac: float = 0.9, concurrency: int = 0,
                   unsafe_no_isolation: bool = False, log: Callable[[str], None] | None = print,
                   ) -> tuple[list[dict[str, Any]], Funnel, list[dict[str, Any]]]:
    """Run the k1.5 §2.3.5 pipeline. Returns (kept problems as code-prompt rows, funnel, one
    report per problem: cases made, cases kept, solutions passing, why dropped)."""
    from longrl.rewards.sandbox.executor import Limits, Sandbox, SandboxConfig

    if not 0 < min_valid <= n_cases:
        raise UserError(f"min_valid ({min_valid}) must be in 1..n_cases ({n_cases})")
    pkgs = cyaron_packages()
    funnel = Funnel(problems_in=len(problems))
    kept: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    # two pools: generators get CYaRon preloaded in their warm processes; solutions do not pay for it
    gen_sb = Sandbox(SandboxConfig(concurrency=concurrency, python_packages=pkgs, preload=["cyaron"],
                                   unsafe_no_isolation=unsafe_no_isolation))
    sol_sb = Sandbox(SandboxConfig(concurrency=concurrency, unsafe_no_isolation=unsafe_no_isolation))
    pool = ThreadPoolExecutor(len(sol_sb.cells) // 2)
    try:
        for p in problems:
            lim = Limits(time_s=p.time_limit)
            sols = p.solutions[:n_solutions]
            n = len(sols)
            need_agree = max(1, math.ceil(agree_frac * n - 1e-9))
            need_pass = max(1, math.floor(pass_frac * n + 1e-9))
            progs = [sol_sb.prepare(code, lang, lim) for lang, code in sols]
            report: dict[str, Any] = {"id": p.id, "solutions": n, "generators": []}
            cases: dict[str, tuple[str, ...]] = {}  # input -> expected (majority) tokens
            expected_text: dict[str, str] = {}
            votes_of: dict[str, list[tuple[str, ...] | None]] = {}  # input -> each solution's tokens
            usable: set[str] = set()  # valid inputs of the generators that made enough of them
            for g in p.generators:
                funnel.generators_in += 1
                seeded = [f"import random as _r\n_r.seed({i})\ndel _r\n{g}" for i in range(n_cases)]
                gen_runs = list(pool.map(lambda src: gen_sb.run(src, "python", b"", lim), seeded))
                inputs = [r.stdout.decode("utf-8", "replace") for r in gen_runs if r.status == "ok" and r.stdout.strip()]
                valid = []
                for inp, outs in zip(inputs, pool.map(lambda i: _solve(sol_sb, progs, i, lim), inputs)):
                    votes = Counter(o[0] for o in outs if o is not None)
                    if votes and votes.most_common(1)[0][1] >= need_agree:
                        best = votes.most_common(1)[0][0]
                        valid.append(inp)
                        cases.setdefault(inp, best)
                        expected_text.setdefault(inp, next(o[1] for o in outs if o and o[0] == best).decode("utf-8", "replace"))
                        votes_of.setdefault(inp, [o[0] if o else None for o in outs])
                enough = len(valid) >= min_valid
                funnel.generators_ok += enough
                report["generators"].append({"ran_ok": len(inputs), "valid": len(valid), "enough": enough})
                if enough:
                    usable.update(valid)
            if not usable:
                report["dropped"] = f"no generator produced {min_valid} valid cases of {n_cases}"
                reports.append(report)
                _say(log, f"{p.id}: dropped ({report['dropped']})")
                continue
            funnel.problems_with_cases += 1
            passing = sum(all(votes_of[inp][j] == cases[inp] for inp in usable) for j in range(n))
            report.update(cases=len(usable), passing=passing, need_pass=need_pass)
            if passing < need_pass:
                report["dropped"] = f"only {passing} of {n} solutions pass all cases (need {need_pass})"
                reports.append(report)
                _say(log, f"{p.id}: dropped ({report['dropped']})")
                continue
            funnel.problems_kept += 1
            reports.append(report)
            _say(log, f"{p.id}: kept, {len(usable)} cases, {passing}/{n} solutions pass")
            kept.append({"id": p.id, "prompt": p.statement, **p.extra, "time_limit": p.time_limit,
                         "tests": [{"input": i, "output": expected_text[i]} for i in sorted(usable)]})
    finally:
        pool.shutdown()
        gen_sb.close()
        sol_sb.close()
    _say(log, funnel.lines())
    return kept, funnel, reports


def _solve(sb: Any, progs: list, inp: str, lim: Any) -> list[tuple[tuple[str, ...], bytes] | None]:
    """Every solution's (tokens, raw output) on one input; None where it failed or did not compile."""
    outs: list[tuple[tuple[str, ...], bytes] | None] = []
    for prog in progs:
        if not hasattr(prog, "payload"):  # a RunResult: the compile failed
            outs.append(None)
            continue
        r = sb.execute(prog, inp, lim)
        outs.append((_tokens(r.stdout), r.stdout) if r.status == "ok" else None)
    return outs


def _say(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)
