"""The code scorer end to end: code extraction, references, verdicts, loaders, remote server, CLI."""

from __future__ import annotations

import gzip
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from longrl.errors import UserError
from longrl.rewards.code import extract_code
from longrl.rewards.sandbox._codec import dumps_value, loads_value
from longrl.rewards.sandbox.harness import parse_reference
from longrl.types import Prompt

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed: apt-get install g++")


ADD_REF = {"tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "0 0\n", "output": "0"}]}
ADD_PY = "a, b = map(int, input().split())\nprint(a + b)"


def fenced(code: str, lang: str = "python") -> str:
    return f"Here is my solution.\n\n```{lang}\n{code}\n```\n"


# ------------------------------------------------------------------------------ pure parts
def test_extract_code_takes_the_final_block_and_normalises_the_language():
    r = "```py\nprint(1)\n```\ntext\n```c++\nint main(){}\n```\n```output\n1\n```"
    assert extract_code(r) == ("cpp", "int main(){}\n")
    assert extract_code("```\nprint(2)\n```") == (None, "print(2)\n")
    assert extract_code("```rust\nfn main(){}\n```") == ("rust", "fn main(){}\n")
    assert extract_code("no code at all") is None
    assert extract_code("```python\nprint(1)\n") is None  # cut at the length cap: unterminated
    assert extract_code("```python\n\n```") is None


@pytest.mark.parametrize("ref, msg", [
    ("tests", "must be an object"),
    ({}, "either 'tests'"),
    ({"tests": [{"input": "1"}]}, "tests[0]"),
    ({"test": "assert f(1) == 1", "entry_point": "not a name"}, "entry_point"),
    ({"test": "x = 1", "entry_point": "f"}, "no assert"),
    ({"test": "assert (", "entry_point": "f"}, "not valid Python"),
    ({"tests": [{"input": "", "output": ""}], "language": "cobol"}, "unknown language"),
    ({"tests": [{"input": "", "output": ""}], "time_limit": -1}, "time_limit"),
    ({"tests": [{"input": "", "output": ""}], "expected": 3}, "unknown reference field"),
])
def test_bad_references_are_rejected_with_a_reason(ref, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("(", r"\(")):
        parse_reference(ref)


def test_codec_round_trips_plain_values_and_refuses_others():
    for v in [None, True, 3, -(2**100), 0.1, float("inf"), "é", [1, (2, {3})], {(1, 2): b"x"}, 1j, frozenset()]:
        out = loads_value(dumps_value(v))
        assert out == v and type(out) is type(v)

    class Sneaky(int):
        def __eq__(self, other):
            return True

    with pytest.raises(TypeError):
        dumps_value(Sneaky(1))
    with pytest.raises(ValueError):
        loads_value('{"__reduce__": []}')


# ------------------------------------------------------------------------------ loaders
def test_code_prompt_file_loader(tmp_path: Path):
    from longrl.data.humaneval import load_code_prompts

    good = {"id": "add", "prompt": "Add.", **ADD_REF, "level": 2}
    f = tmp_path / "code.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps({"id": "fn", "prompt": "f", "test": "assert f(1) == 2",
                                                       "entry_point": "f"}) + "\n")
    ps = load_code_prompts(f)
    assert [p.id for p in ps] == ["add", "fn"] and all(p.task == "code" for p in ps)
    assert ps[0].reference["tests"] == ADD_REF["tests"] and ps[0].level == 2

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n" + json.dumps({"id": "x", "prompt": "p", "tests": "oops"}) + "\n{not json\n")
    with pytest.raises(UserError) as e:
        load_code_prompts(bad)
    assert f"{bad}:2:" in str(e.value) and f"{bad}:3:" in str(e.value)
    ps = load_code_prompts(bad, skip_invalid=True, rejects_path=tmp_path / "rejects.jsonl")
    assert [p.id for p in ps] == ["add"] and len((tmp_path / "rejects.jsonl").read_text().splitlines()) == 2


def test_humaneval_loader_reports_a_file_missing_from_data_dir(tmp_path: Path):
    from longrl.data.humaneval import CODE_BENCHMARKS

    with pytest.raises(UserError, match="humaneval.jsonl.gz not found; --data-dir must hold"):
        CODE_BENCHMARKS["humaneval"](tmp_path)


def test_missing_bwrap_refuses_unless_unsafe(monkeypatch):
    from longrl.rewards.sandbox import executor

    monkeypatch.setattr(executor, "bwrap_path", lambda: None)
    with pytest.raises(UserError, match="apt-get install bubblewrap"):
        executor.Sandbox()
    with executor.Sandbox(concurrency=1, unsafe_no_isolation=True) as sb:
        assert sb.isolation == "none"
        res = sb.run("print(input()[::-1])", "python", b"abc")
        assert (res.status, res.stdout) == ("ok", b"cba\n")
        assert sb.run("while True: pass", "python", limits=executor.Limits(time_s=0.5)).status == "timeout"


def test_unknown_language_is_a_clear_error():
    from longrl.rewards.sandbox.executor import check_language

    with pytest.raises(UserError, match="unknown language 'rust'"):
        check_language("rust")


# ------------------------------------------------------------------------------ with the sandbox
@pytest.fixture(scope="module")
def scorer():
    from longrl.rewards import get_scorer

    s = get_scorer("code", time_limit=2.0, memory_mb=256, concurrency=2)
    yield s
    s.close()


def run1(scorer, code: str, ref=ADD_REF, lang: str = "python"):
    return scorer([Prompt(id="p", text="", reference=ref, task="code")], [fenced(code, lang)])[0]


@needs_bwrap
def test_stdio_verdicts(scorer):
    s = run1(scorer, ADD_PY)
    assert (s.value, s.reason, s.parts["verdicts"], s.parts["passed"]) == (1.0, "ok", ["ok", "ok"], 2)
    s = run1(scorer, "a, b = map(int, input().split())\nprint(a - b)")
    assert (s.value, s.reason, s.parts["verdicts"]) == (0.0, "wrong_answer", ["wrong_answer", "ok"])
    s = run1(scorer, "raise ValueError('boom')")
    assert (s.value, s.reason, s.parts["counts"]) == (0.0, "runtime_error", {"runtime_error": 2})
    assert "boom" in s.parts["detail"]
    s = run1(scorer, ADD_PY + "\nimport sys; sys.exit(3)")  # right output, non-zero exit
    assert s.reason == "runtime_error"


@needs_bwrap
def test_response_level_reasons(scorer):
    p = Prompt(id="p", text="", reference=ADD_REF, task="code")
    no_code, rust, bad = scorer([p, p, Prompt(id="b", text="", reference={"x": 1}, task="code")],
                                ["I think the answer is 3.", fenced("fn main(){}", "rust"), fenced(ADD_PY)])
    assert (no_code.value, no_code.reason) == (0.0, "no_code")
    assert (rust.value, rust.reason) == (0.0, "unsupported_language")
    assert (bad.value, bad.reason) == (0.0, "bad_reference")


@needs_bwrap
@needs_gxx
def test_cpp(scorer):
    code = "#include <cstdio>\nint main(){long a,b;scanf(\"%ld %ld\",&a,&b);printf(\"%ld\\n\",a+b);}"
    assert run1(scorer, code, lang="cpp").reason == "ok"
    s = run1(scorer, "int main( { syntax error", lang="cpp")
    assert (s.value, s.reason, s.parts["verdicts"]) == (0.0, "compile_error", ["not_run", "not_run"])
    s = run1(scorer, "#include <cstdlib>\nint main(){ int *p = 0; return *p; }", lang="cpp")
    assert s.reason == "killed"


@needs_bwrap
def test_function_tests_and_per_case_verdicts(scorer):
    ref = {"prefix": "def sq(x):\n    \"\"\"x squared\"\"\"\n", "entry_point": "sq",
           "test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-3) == 9\n"
                   "    assert abs(candidate(0.5) - 0.25) < 1e-9\n"}
    assert run1(scorer, "def sq(x):\n    return x * x", ref).parts["verdicts"] == ["ok"] * 3
    s = run1(scorer, "def sq(x):\n    return x * 2", ref)
    assert s.parts["verdicts"] == ["ok", "wrong_answer", "wrong_answer"] and s.value == 0.0
    s = run1(scorer, "def sq(x):\n    if x < 0: raise ValueError('neg')\n    return x * x", ref)
    assert s.parts["verdicts"] == ["ok", "runtime_error", "ok"]
    s = run1(scorer, "def sq(x):\n    return None", ref)  # None - 0.25 raises TypeError in the checker
    assert s.parts["verdicts"] == ["wrong_answer", "wrong_answer", "runtime_error"]


@needs_bwrap
def test_humaneval_sample_canonical_pass_and_corrupted_fail(scorer):
    from longrl.data.benchmarks import benchmark_file
    from longrl.data.humaneval import load_humaneval

    path = benchmark_file("humaneval")
    prompts = load_humaneval()
    assert len(prompts) == 164
    rows = {r["task_id"]: r for r in map(json.loads, gzip.open(path, "rt"))}
    sample = prompts[::16]  # 11 problems, spread over the set; the bench runs all 164
    good = [fenced(rows[p.id]["prompt"] + rows[p.id]["canonical_solution"]) for p in sample]
    bad = [fenced(rows[p.id]["prompt"] + "    return None\n") for p in sample]
    scores = scorer(sample + sample, good + bad)
    assert [s.reason for s in scores[: len(sample)]] == ["ok"] * len(sample)
    assert not any(s.value for s in scores[len(sample):])


# ------------------------------------------------------------------------------ remote sandbox
@pytest.fixture(scope="module")
def server():
    from longrl.rewards.sandbox import Sandbox
    from longrl.rewards.sandbox.server import make_server

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    sb = Sandbox(concurrency=1)
    srv = make_server(sb, "127.0.0.1", 0, token="s3cret")
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    sb.close()


def test_remote_scorer_and_client(server):
    from longrl.rewards.code import CodeScorer
    from longrl.rewards.sandbox.server import SandboxClient

    s = CodeScorer(url=server, token="s3cret", concurrency=2, time_limit=1.0)
    p = Prompt(id="p", text="", reference=ADD_REF, task="code")
    fn_ref = {"test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n",
              "entry_point": "sq"}
    q = Prompt(id="q", text="", reference=fn_ref, task="code")
    good, bad, fn_good, fn_half, fn_exit, fn_loop = s(
        [p, p, q, q, q, q],
        [fenced(ADD_PY), fenced("print(0)"), fenced("def sq(x):\n    return x * x"), fenced("def sq(x):\n    return 4"),
         fenced("import os\nos._exit(0)"), fenced("def sq(x):\n    while True: pass")])
    s.close()
    assert (good.value, good.reason, bad.reason) == (1.0, "ok", "wrong_answer")
    assert (fn_good.value, fn_good.parts["verdicts"]) == (1.0, ["ok", "ok"])
    assert fn_half.parts["verdicts"] == ["ok", "wrong_answer"]
    assert fn_exit.parts["verdicts"] == ["runtime_error", "runtime_error"]
    assert fn_loop.parts["verdicts"] == ["timeout", "not_run"]
    c = SandboxClient(server, "s3cret")
    res = c.run("print(input() * 2)", "python", "ab")
    assert (res.status, res.stdout) == ("ok", b"abab\n")
    with pytest.raises(UserError, match="unknown language"):
        c.run("x", "fortran")


def test_remote_errors_surface_at_construction(server):
    from longrl.rewards.code import CodeScorer
    from longrl.rewards.sandbox.server import make_server

    with pytest.raises(UserError, match="rejected the token"):
        CodeScorer(url=server, token="wrong")
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError, match="cannot reach the sandbox server"):
        CodeScorer(url=f"http://127.0.0.1:{port}")
    with pytest.raises(UserError, match="needs a token"):
        make_server(None, "0.0.0.0", 0, token=None)  # refused before anything binds


def test_remote_hash_collision_reply_is_bounded_on_both_sides(server):
    # The candidate swaps the stub's reply encoder for a set of 30,000 ints that all hash to 0
    # (under the 1 MiB output cap): the server must refuse to rebuild it (before the fix the server
    # and then the client each spent seconds per call on it; 100,000 took 137 s).
    from longrl.rewards.code import CodeScorer

    attack = ("import sys\nM = (1 << 61) - 1\n"
              "REPLY = {'set': [{'int': format(k * M, 'x')} for k in range(1, 30001)]}\n"
              "sys._getframe(1).f_globals['encode_value'] = lambda value: REPLY\n"
              "def sq(x):\n    return x * x\n")
    ref = {"test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n",
           "entry_point": "sq"}
    s = CodeScorer(url=server, token="s3cret", concurrency=1, time_limit=1.0)
    t = time.monotonic()
    (res,) = s([Prompt(id="q", text="", reference=ref, task="code")], [fenced(attack)])
    elapsed = time.monotonic() - t
    s.close()
    assert elapsed < 10, f"scoring took {elapsed:.1f} s"
    assert (res.value, res.parts["verdicts"]) == (0.0, ["runtime_error", "runtime_error"]), res
    assert "collide" in res.parts["detail"]


# ------------------------------------------------------------------------------ CLI
@needs_bwrap
def test_cli_sandbox_run(tmp_path: Path, capsys):
    from longrl.cli import main

    prog = tmp_path / "rev.py"
    prog.write_text("print(input()[::-1])")
    inp = tmp_path / "in.txt"
    inp.write_text("hello\n")
    assert main(["sandbox", "run", str(prog), "--stdin", str(inp)]) == 0
    out = capsys.readouterr()
    assert out.out == "olleh\n" and "[sandbox] ok" in out.err
    loop = tmp_path / "loop.py"
    loop.write_text("while True: pass")
    assert main(["sandbox", "run", str(loop), "--time-limit", "0.5"]) == 1
    assert "[sandbox] timeout" in capsys.readouterr().err
    assert main(["sandbox", "run", str(prog), "--lang", "rust"]) == 2
    assert "unknown language 'rust'" in capsys.readouterr().err
    odd = tmp_path / "prog.rs"
    odd.write_text("fn main(){}")
    assert main(["sandbox", "run", str(odd)]) == 2
    assert "--lang" in capsys.readouterr().err


@needs_bwrap
def test_the_scorer_docstring_example_runs():
    import doctest

    import longrl.rewards.code as mod

    res = doctest.testmod(mod, verbose=False)
    assert res.attempted >= 5 and res.failed == 0


@needs_bwrap
def test_output_cap_grows_with_the_expected_output(scorer):
    big = "".join(f"{i}\n" for i in range(300_000))  # ~2 MB, over the 1 MiB default cap
    ref = {"tests": [{"input": "", "output": big}]}
    assert run1(scorer, "print('\\n'.join(map(str, range(300_000))))", ref).reason == "ok"
    assert run1(scorer, "import sys\nwhile True: sys.stdout.write('x' * 65536)", ref).reason == "output_limit"
