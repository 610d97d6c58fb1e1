"""CYaRon test generation (k1.5 §2.3.5) on a small built-in demo set.

``DEMO_PROBLEMS`` has one problem for each way through the funnel:

* ``sum``: a good generator, 5 correct solutions and 1 wrong one (it drops numbers after the
  50th) -> every case has 5 of 6 agreeing, 5 of 6 solutions pass everything -> kept;
* ``sum-two-wrong``: the same generator; two wrong solutions, wrong on disjoint thirds of the
  inputs (n % 3 == 0, n % 3 == 1) -> every case keeps 5 of 6 agreeing, but only 4 of 6 pass
  everything -> dropped;
* ``max-disagree``: 3 correct and 3 differently wrong solutions -> no majority of 5 on most
  cases -> the generator makes too few valid cases -> dropped;
* ``flaky-generator``: the generator crashes on about half of its seeds -> too few cases.

With 6 solutions the thresholds are ceil(0.7*6) = 5 agreeing and floor(0.9*6) = 5 passing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from longrl.errors import UserError

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
cyaron = pytest.importorskip("cyaron", reason="cyaron is not installed (pip install 'longrl[code]')")

SUM_GEN = ("from cyaron import *\nn = randint(1, 100)\nprint(n)\n"
           "print(' '.join(str(x[0]) for x in Vector.random(n, [(-1000, 1000)])))")
SUM_OK = [
    "n = int(input())\nprint(sum(map(int, input().split())))",
    "import sys\nd = sys.stdin.read().split()\nprint(sum(int(x) for x in d[1:]))",
    "input()\nt = 0\nfor x in input().split():\n    t += int(x)\nprint(t)",
    "from functools import reduce\ninput()\nprint(reduce(lambda a, b: a + b, map(int, input().split()), 0))",
    "input()\nxs = sorted(map(int, input().split()))\nprint(sum(xs))",
]
SUM_WRONG_50 = "input()\nprint(sum(list(map(int, input().split()))[:50]))"
SUM_WRONG_SEVEN = ("n = int(input())\nxs = list(map(int, input().split()))\n"
                   "print(sum(xs) + (1 if n % 3 == 0 else 0))")
SUM_WRONG_ELEVEN = ("n = int(input())\nxs = list(map(int, input().split()))\n"
                    "print(sum(xs) - (1 if n % 3 == 1 else 0))")
MAX_GEN = ("from cyaron import *\nn = randint(2, 30)\nprint(n)\n"
           "print(' '.join(str(randint(-100, 100)) for _ in range(n)))")
MAX_OK = ["input()\nprint(max(map(int, input().split())))",
          "input()\nprint(sorted(map(int, input().split()))[-1])",
          "input()\nb = None\nfor x in map(int, input().split()):\n    b = x if b is None or x > b else b\nprint(b)"]
MAX_WRONG = ["input()\nprint(min(map(int, input().split())))",
             "input()\nprint(list(map(int, input().split()))[0])",
             "input()\nprint(list(map(int, input().split()))[-1])"]

DEMO_PROBLEMS = [
    {"id": "sum", "statement": "Read n, then n integers; print their sum.",
     "generators": [f"Here is a generator:\n```python\n{SUM_GEN}\n```"],  # as a model would answer
     "solutions": SUM_OK + [SUM_WRONG_50]},
    {"id": "sum-two-wrong", "statement": "Read n, then n integers; print their sum.", "generators": [SUM_GEN],
     "solutions": SUM_OK[:4] + [SUM_WRONG_SEVEN, SUM_WRONG_ELEVEN]},
    {"id": "max-disagree", "statement": "Read n, then n integers; print the largest.", "generators": [MAX_GEN],
     "solutions": MAX_OK + MAX_WRONG},
    {"id": "flaky-generator", "statement": "Read n, then n integers; print their sum.",
     "generators": ["import random\nif random.random() < 0.5:\n    raise SystemExit(1)\n" + SUM_GEN],
     "solutions": SUM_OK + [SUM_WRONG_50]},
]


def write_problems(path: Path, problems: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in problems))
    return path


def test_funnel_on_the_demo_set(tmp_path: Path):
    from longrl.rewards.testgen import generate_tests, load_problems

    problems = load_problems(write_problems(tmp_path / "p.jsonl", DEMO_PROBLEMS))
    logs: list[str] = []
    kept, funnel, reports = generate_tests(problems, n_cases=12, min_valid=9, concurrency=2, log=logs.append)
    assert (funnel.problems_in, funnel.generators_in, funnel.generators_ok, funnel.problems_with_cases,
            funnel.problems_kept) == (4, 4, 2, 2, 1), reports
    assert [k["id"] for k in kept] == ["sum"]
    by_id = {r["id"]: r for r in reports}
    assert by_id["sum"]["passing"] == 5 and by_id["sum-two-wrong"]["passing"] == 4
    assert by_id["max-disagree"]["generators"][0]["valid"] < 9
    assert by_id["flaky-generator"]["generators"][0]["ran_ok"] < 9
    # the kept cases' expected outputs are the correct sums, and a correct solution passes them
    for case in kept[0]["tests"]:
        nums = [int(x) for x in case["input"].split()[1:]]
        assert int(case["output"]) == sum(nums)
    assert "problems kept: 1" in logs[-1]


def test_cli_testgen_writes_loadable_prompts(tmp_path: Path, capsys):
    from longrl.cli import main
    from longrl.data.humaneval import load_code_prompts
    from longrl.rewards.code import CodeScorer

    src = write_problems(tmp_path / "p.jsonl", [DEMO_PROBLEMS[0], DEMO_PROBLEMS[3]])
    out = tmp_path / "out" / "code.jsonl"
    assert main(["sandbox", "testgen", "--problems", str(src), "--out", str(out), "--cases", "10",
                 "--min-valid", "8", "--concurrency", "2"]) == 0
    err = capsys.readouterr().err
    assert "problems in: 2" in err and "problems kept: 1" in err
    prompts = load_code_prompts(out)
    assert [p.id for p in prompts] == ["sum"] and len(prompts[0].reference["tests"]) >= 8
    scorer = CodeScorer(concurrency=2)
    good, wrong = scorer(prompts * 2, [f"```python\n{SUM_OK[0]}\n```", f"```python\n{SUM_WRONG_50}\n```"])
    scorer.close()
    assert good.reason == "ok" and wrong.value == 0.0


def test_bad_problem_file(tmp_path: Path):
    from longrl.rewards.testgen import generate_tests, load_problems

    f = write_problems(tmp_path / "p.jsonl", [{"id": "a", "generators": [], "solutions": ["print(1)"]},
                                              {"id": "b", "generators": ["print(1)"], "solutions": []}])
    with pytest.raises(UserError) as e:
        load_problems(f)
    assert f"{f}:1:" in str(e.value) and f"{f}:2:" in str(e.value)
    with pytest.raises(UserError, match="min_valid"):
        generate_tests(load_problems(write_problems(tmp_path / "q.jsonl", DEMO_PROBLEMS[:1])), n_cases=5, min_valid=9)


def test_generator_prompt_teaches_cyaron():
    from longrl.rewards.testgen import generator_prompt

    text = generator_prompt("Read n and print n squared.")
    assert "Read n and print n squared." in text and "from cyaron import *" in text and "randint" in text
