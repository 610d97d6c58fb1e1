"""Test harnesses: run a program against its test cases; every verdict is decided here, outside.

Two kinds of reference (validated by :func:`parse_reference`):

* **stdin/stdout** (competitive programming): ``{"tests": [{"input": str, "output": str}, ...]}``.
  Each case is one fresh sandboxed run with that stdin. The expected output never enters the
  sandbox; the parent compares whitespace-separated tokens (the usual judge checker), and a case
  is ``ok`` only when the run exited with status 0 *and* the tokens match.
* **assert-style** (HumanEval): ``{"test": str, "entry_point": str, "prefix": str}``. The test
  code is trusted data and runs here, in the parent; only the candidate's functions run in the
  sandbox. The name ``candidate`` (and the entry point's own name) is bound to a proxy: a call
  sends the arguments (plain values) to the sandbox with a fresh nonce, the sandbox calls the
  function, and the reply counts only when it carries that nonce. Its value is decoded into plain
  built-in types before the test's own comparison runs here. So ``sys.exit(0)``/``os._exit(0)``
  before the asserts, an ``__eq__`` that is always true, reading the caller's frame (the frame
  holding the expected value lives in another process), or printing "all tests passed" cannot
  turn a test green: a case passes only when its assert statement ran to the end *here*, with at
  least one answered call. The response program is ``prefix`` (the prompt's code: imports and
  helper functions) followed by the response's code.

Cases of an assert-style test are the statements of ``check(candidate)`` that contain an
``assert`` (or the top-level statements with one, when there is no ``check``). A statement whose
asserts hold without calling the candidate at all (HumanEval's ``assert True``) tests nothing and
is not counted.

The test code is trusted data (like the config): it runs in the process that calls
:func:`evaluate` (the reward worker, also with a remote sandbox server, which only ever runs code
inside sandboxes), and may touch that process's global state such as the ``random`` module.

After a case times out, the remaining cases are ``not_run`` (each would cost the full time limit;
the reward is 0 either way). After any other death of the process a fresh one runs the next case.
"""

from __future__ import annotations

import ast
import builtins
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from longrl.rewards.sandbox.executor import Limits, Program, RunResult
from longrl.rewards.sandbox.rpc import CallFailed

VERDICTS = ("ok", "wrong_answer", "runtime_error", "timeout", "memory", "output_limit", "killed", "not_run")


@dataclass
class CodeReference:
    """A validated ``Prompt.reference`` of a code task."""

    tests: list[dict[str, str]] = field(default_factory=list)  # stdin/stdout pairs
    test: str = ""  # assert-style test code
    entry_point: str = ""  # the function the assert-style test calls
    prefix: str = ""  # code run before the response's (the prompt's imports and helpers)
    language: str = "python"  # used when the response's code block names no language
    time_limit: float | None = None  # wall seconds per case; None = the sandbox default
    memory_mb: int | None = None  # per run; None = the sandbox default

    @property
    def kind(self) -> str:
        return "stdio" if self.tests else "function"


def parse_reference(ref: Any) -> CodeReference:
    """Check a code reference; ``ValueError`` with a short reason (the loaders add file:line)."""
    if not isinstance(ref, dict):
        raise ValueError(f"code reference must be an object, got {type(ref).__name__}")
    known = {f for f in CodeReference.__dataclass_fields__}
    unknown = sorted(set(ref) - known)
    if unknown:
        raise ValueError(f"unknown reference field(s) {unknown}; choose from {sorted(known)}")
    r = CodeReference(**ref)
    if bool(r.tests) == bool(r.test):
        raise ValueError("reference needs either 'tests' (stdin/stdout pairs) or 'test' + 'entry_point'")
    if r.tests:
        if not isinstance(r.tests, list):
            raise ValueError("'tests' must be a list of {'input': str, 'output': str}")
        for i, t in enumerate(r.tests):
            if not isinstance(t, dict) or not isinstance(t.get("input"), str) or not isinstance(t.get("output"), str):
                raise ValueError(f"tests[{i}] must be {{'input': str, 'output': str}}")
    else:
        if not isinstance(r.test, str) or not isinstance(r.entry_point, str) or not r.entry_point.isidentifier():
            raise ValueError("assert-style reference needs 'test' (code) and 'entry_point' (a function name)")
        try:
            ast.parse(r.test)
            ast.parse(r.prefix or "")
        except SyntaxError as e:
            raise ValueError(f"reference test or prefix is not valid Python: {e.msg} (line {e.lineno})") from None
        if not any(_cases(r.test)[1]):
            raise ValueError("reference test has no assert statement")
    if r.language not in ("python", "cpp"):
        raise ValueError(f"unknown language {r.language!r}; choose from ['python', 'cpp']")
    if r.kind == "function" and r.language != "python":
        raise ValueError("assert-style tests need language 'python'")
    if r.time_limit is not None and not (isinstance(r.time_limit, (int, float)) and 0 < r.time_limit <= 600):
        raise ValueError("time_limit must be seconds in (0, 600]")
    if r.memory_mb is not None and not (isinstance(r.memory_mb, int) and 16 <= r.memory_mb <= 65536):
        raise ValueError("memory_mb must be an integer in [16, 65536]")
    return r


@dataclass
class Evaluation:
    """Per-case verdicts of one program, and the reason code the scorer reports."""

    verdicts: list[str]
    reason: str  # "ok", the first failing verdict, or compile_error / no_tests / sandbox_error
    detail: str = ""  # the first failure's message (truncated), for logs

    @property
    def passed(self) -> bool:
        return self.reason == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Evaluation:
        v = d.get("verdicts")
        if not isinstance(v, list) or not all(x in VERDICTS for x in v) or not isinstance(d.get("reason"), str):
            raise ValueError("malformed evaluation")
        return Evaluation(list(v), d["reason"], str(d.get("detail", ""))[:1000])


def _summarise(verdicts: list[str], detail: str = "") -> Evaluation:
    if not verdicts:
        return Evaluation([], "no_tests", detail)
    bad = [v for v in verdicts if v != "ok"]
    return Evaluation(verdicts, bad[0] if bad else "ok", detail if bad else "")


def _limits(sb: Backend, ref: CodeReference) -> Limits:
    base = sb.default_limits
    return Limits(**{**asdict(base), **({"time_s": float(ref.time_limit)} if ref.time_limit else {}),
                     **({"memory_mb": ref.memory_mb} if ref.memory_mb else {})})


class Backend(Protocol):
    """What the harness needs from a sandbox: the local :class:`Sandbox`, or a
    :class:`~longrl.rewards.sandbox.server.SandboxClient` for a remote one. Either way the
    harness, the test code and the expected outputs stay in the caller's process."""

    default_limits: Limits

    def run_batch(self, code: str, lang: str, inputs: list[str], limits: Limits
                  ) -> tuple[RunResult | None, list[RunResult | None]]: ...

    def session(self, code: str, limits: Limits) -> Any: ...


def evaluate(sb: Backend, code: str, lang: str, ref: CodeReference | dict) -> Evaluation:
    """Run ``code`` (language ``lang``) against every case of ``ref``."""
    ref = ref if isinstance(ref, CodeReference) else parse_reference(ref)
    if ref.kind == "stdio":
        return _evaluate_stdio(sb, code, lang, ref)
    if lang != "python":
        return Evaluation([], "unsupported_language", "assert-style tests run Python only")
    return _evaluate_function(sb, code, ref)


# ---------------------------------------------------------------------------- stdin / stdout
def outputs_match(got: bytes, expected: str) -> bool:
    """Token-wise comparison (whitespace and trailing newlines do not matter)."""
    return got.decode("utf-8", "replace").split() == expected.split()


def _evaluate_stdio(sb: Backend, code: str, lang: str, ref: CodeReference) -> Evaluation:
    lim = _limits(sb, ref)
    # A right answer must fit under the output cap: twice the longest expected output, plus slack
    # (only the cap's size enters the sandbox, never the output itself).
    need = 2 * max(len(c["output"].encode()) for c in ref.tests) + (64 << 10)
    if need > lim.output_bytes:
        lim = replace(lim, output_bytes=need)
    failed_compile, results = sb.run_batch(code, lang, [c["input"] for c in ref.tests], lim)
    if failed_compile is not None:
        return Evaluation(["not_run"] * len(ref.tests), "compile_error",
                          failed_compile.stderr.decode("utf-8", "replace")[-500:])
    verdicts: list[str] = []
    detail = ""
    for case, res in zip(ref.tests, results):
        if res is None:  # not run: an earlier case timed out
            verdicts.append("not_run")
            continue
        v = res.status
        if v == "ok" and not outputs_match(res.stdout, case["output"]):
            v = "wrong_answer"
        if v != "ok" and not detail:
            detail = _describe(res, v)
        verdicts.append(v)
    return _summarise(verdicts, detail)


def _describe(res: RunResult, verdict: str) -> str:
    if verdict == "wrong_answer":
        return "output: " + res.stdout.decode("utf-8", "replace")[:200]
    return f"exit {res.exit_code}: " + res.stderr.decode("utf-8", "replace")[-300:]


# ---------------------------------------------------------------------------- assert-style
class _Dead(BaseException):
    """The candidate's process is gone. A BaseException, so that a test's ``except Exception``
    cannot swallow it and count a timeout as an expected exception."""

    def __init__(self, verdict: str, message: str):
        super().__init__(message)
        self.verdict = verdict


def _cases(test: str) -> tuple[list[ast.stmt], list[bool], str | None, list[ast.stmt]]:
    """(statements to run, which are cases, the candidate's parameter name, module-level setup)."""
    tree = ast.parse(test)
    check = next((s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "check" and s.args.args), None)
    if check is not None:
        body, setup = check.body, [s for s in tree.body if s is not check]
        arg = check.args.args[0].arg
    else:
        body, setup, arg = tree.body, [], None
    is_case = [any(isinstance(n, ast.Assert) for n in ast.walk(s)) for s in body]
    return body, is_case, arg, setup


class _CandidateHost:
    """Owns the sandbox session for one program; restarts it after a non-timeout death."""

    def __init__(self, sb: Backend, program: str, lim: Limits):
        self.sb, self.program, self.lim = sb, program, lim
        self.session = None
        self.deadline = 0.0
        self.calls = 0

    def call(self, name: str, args: tuple) -> Any:
        try:
            if self.session is None:
                self.session = self.sb.session(self.program, self.lim)
            self.calls += 1
            value = self.session.call(name, args, self.deadline)
            return value
        except CallFailed as e:
            if e.fatal:
                self.session = None
                raise _Dead(e.verdict, str(e)) from None
            raise _remote_exception(str(e)) from None

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def _remote_exception(message: str) -> Exception:
    """Re-raise the candidate's exception as the same built-in type (tests may expect one)."""
    name, _, msg = message.partition(": ")
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, _Dead):
        try:
            return cls(msg)
        except Exception:  # noqa: BLE001 - an exception class with an unusual constructor
            pass
    return RuntimeError(message)


class _Proxy:
    def __init__(self, host: _CandidateHost, name: str):
        self.host, self.name = host, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError("the sandbox proxy takes positional arguments only")
        return self.host.call(self.name, args)


def _evaluate_function(sb: Backend, code: str, ref: CodeReference) -> Evaluation:
    lim = _limits(sb, ref)
    host = _CandidateHost(sb, (ref.prefix + "\n\n" + code) if ref.prefix else code, lim)
    body, is_case, arg, setup = _cases(ref.test)
    proxy = _Proxy(host, ref.entry_point)
    ns: dict[str, Any] = {"__name__": "__longrl_test__"}
    verdicts: list[str] = []
    detail = ""
    try:
        # Trusted code: the prompt's helpers (e.g. HumanEval's poly, encode_cyclic) and the
        # test's module-level setup run here, so the test can use them without asking the sandbox.
        try:
            exec(compile(ref.prefix or "", "<prefix>", "exec"), ns)
            exec(compile(ast.Module(setup, []), "<test>", "exec"), ns)
        except Exception as e:  # noqa: BLE001 - a broken reference must not stop training
            return Evaluation([], "bad_reference", f"{type(e).__name__}: {e}"[:500])
        ns[ref.entry_point] = proxy
        if arg:
            ns[arg] = proxy
        pending = None
        for stmt, case in zip(body, is_case):
            if "timeout" in verdicts:
                if case:
                    verdicts.append("not_run")
                continue
            host.deadline = time.monotonic() + lim.time_s
            calls0 = host.calls
            v, msg = "ok", ""
            try:
                exec(compile(ast.Module([stmt], []), "<test>", "exec"), ns)
            except _Dead as e:
                v, msg = e.verdict, str(e)
            except AssertionError as e:
                v, msg = "wrong_answer", f"assert failed (line {stmt.lineno}) {e}"
            except Exception as e:  # noqa: BLE001 - sandbox boundary: the values under test came
                # from untrusted code, so any exception while checking them is a failed case
                # (e.g. comparing a returned None with a float), never a crash of the grader.
                v, msg = ("runtime_error" if host.calls > calls0 else "wrong_answer"), f"{type(e).__name__}: {e}"
            if not case:
                pending = (v, msg) if v != "ok" else pending
                continue
            if v == "ok" and host.calls == calls0:
                continue  # asserts that never called the candidate test nothing
            if v != "ok" and pending is not None:
                v, msg = pending
            pending = None
            if v != "ok" and not detail:
                detail = f"{v}: {msg}"[:500]
            verdicts.append(v)
    finally:
        host.close()
    return _summarise(verdicts, detail)


def counts(verdicts: list[str]) -> dict[str, int]:
    return dict(Counter(verdicts))


__all__ = ["Backend", "CodeReference", "Evaluation", "Program", "VERDICTS", "counts", "evaluate", "outputs_match",
           "parse_reference"]
