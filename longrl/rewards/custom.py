"""Reward functions a user names in the run config: ``module:function`` or ``path/to/file.py:function``.

Three signatures are accepted, each adapted here, where it enters (STYLE §15), so nothing else
in longrl knows which one a function has:

- **TRL's** ``fn(prompts, completions, **columns) -> list[float | None]``: one call per batch, with
  ``reference`` (each prompt's reference) and every column of ``Prompt.extra`` as keyword lists;
  prompts and completions are chat messages when the prompt came as messages, as TRL passes
  them. ``None`` means "not applicable" (TRL's convention): 0 with reason ``not_applicable``.
- **verl's** ``fn(data_source, solution_str, ground_truth, extra_info) -> float | {"score": ...}``:
  one call per response; ``data_source`` is the row's ``data_source`` column, else the task.
  A dict's other keys go into ``Score.parts``.
- **longrl's** :class:`~longrl.rewards.Scorer` ``fn(prompts, responses) -> list[Score | float]``;
  a class is instantiated once, with no arguments.

The function runs in its own worker processes, never in the trainer's: each call has a deadline
(``timeout``), after which the worker is killed and replaced (a thread cannot be stopped, and a
signal cannot interrupt C code: the reasons of :mod:`~longrl.rewards.math_pool`). What a call
does wrong costs only the responses it was scoring, each 0 with a reason: ``reward_error`` (it
raised), ``bad_return`` (a string, NaN, a list of the wrong length, a dict without ``score``),
``timeout``, or ``crash`` (the worker died). The first traceback of each kind travels in
``Score.parts["traceback"]`` and is printed once by the router.

    >>> import pathlib, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = (pathlib.Path(d) / "r.py").write_text("def f(data_source, solution_str, ground_truth, extra_info):\\n"
    ...                                             "    return float(solution_str.strip() == ground_truth)\\n")
    >>> from longrl.types import Prompt
    >>> scorer = FunctionScorer(f"{d}/r.py:f")
    >>> p = Prompt(id="0", text="2+2?", reference="4", task="t")
    >>> [(s.value, s.reason) for s in scorer([p, p], ["4", "5"])]
    [(1.0, 'ok'), (0.0, 'ok')]
    >>> scorer.close()
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import math
import multiprocessing as mp
import os
import sys
import threading
import time
import traceback
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from longrl.errors import UserError
from longrl.types import Prompt, Score

FORMS = ("trl", "verl", "longrl")
VERL_ARGS = ("data_source", "solution_str", "ground_truth", "extra_info")
ACCEPTED = ("TRL's (prompts, completions, **kwargs) -> list[float], verl's (data_source, solution_str, "
            "ground_truth, extra_info) -> float or dict with 'score', or longrl's (prompts, responses) -> list[Score]")
_BOOT_TIMEOUT = 120.0  # s: a worker that has not imported the function by then is broken
_SHOWN = 300  # characters of a failure's last line kept in Score.parts["detail"]


@dataclass(frozen=True)
class FunctionSpec:
    """Where a reward function lives. ``target`` is a module name or an absolute ``.py`` path."""

    text: str  # as written in the config
    target: str
    attr: str
    is_file: bool
    base_dir: str  # a module is also looked for here (the working directory the config was read in)


def parse_function(text: str, where: str, base_dir: str | Path | None = None) -> FunctionSpec:
    base = str(Path(base_dir or os.getcwd()).resolve())
    target, _, attr = text.rpartition(":")
    if not target or not attr.isidentifier():
        raise UserError(f"{where}: {text!r} is not module:function or path/to/file.py:function")
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    if is_file:
        path = Path(target).expanduser()
        path = path if path.is_absolute() else Path(base) / path
        if not path.is_file():
            raise UserError(f"{where}: {text!r}: no such file {path}")
        target = str(path.resolve())
    return FunctionSpec(text, target, attr, is_file, base)


_FILE_MODULES: dict[str, Any] = {}


def _import(spec: FunctionSpec) -> Any:
    if spec.is_file:
        if spec.target not in _FILE_MODULES:
            name = f"longrl_user_{Path(spec.target).stem}_{zlib.crc32(spec.target.encode()):08x}"
            loader = importlib.util.spec_from_file_location(name, spec.target)
            module = importlib.util.module_from_spec(loader)
            folder = str(Path(spec.target).parent)
            if folder not in sys.path:  # the file may import its neighbours, as a script run from there would
                sys.path.append(folder)
            sys.modules[name] = module  # so that classes defined there pickle by reference
            try:
                loader.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            _FILE_MODULES[spec.target] = module
        return _FILE_MODULES[spec.target]
    try:
        return importlib.import_module(spec.target)
    except ModuleNotFoundError as e:
        if e.name != spec.target.split(".")[0] or spec.base_dir in sys.path:
            raise
    sys.path.append(spec.base_dir)  # `longrl` (a console script) does not put the working directory on the path
    return importlib.import_module(spec.target)


def load_function(spec: FunctionSpec, where: str) -> Any:
    """Import the module or file and return the named attribute; any failure is a UserError naming ``where``."""
    try:
        module = _import(spec)
    except ModuleNotFoundError as e:
        raise UserError(f"{where}: {spec.text!r}: no module named {e.name!r}") from None
    except BaseException as e:  # noqa: BLE001 - user code: whatever its import raises is the user's error
        line = traceback.format_exception_only(type(e), e)[-1].strip()
        raise UserError(f"{where}: {spec.text!r}: importing {spec.target} failed: {line}") from None
    if not hasattr(module, spec.attr):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise UserError(f"{where}: {spec.text!r}: {spec.target} has no {spec.attr!r} (it defines {names[:12]})")
    obj = getattr(module, spec.attr)
    if not callable(obj):
        raise UserError(f"{where}: {spec.text!r} is a {type(obj).__name__}, not a function")
    return obj


def signature_form(obj: Any, where: str, text: str = "") -> str:
    """Which accepted signature ``obj`` has: ``trl``, ``verl`` or ``longrl`` (see the module docstring)."""
    fn = obj
    if inspect.isclass(obj):
        try:
            needed = [p.name for p in inspect.signature(obj).parameters.values()
                      if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        except (TypeError, ValueError):
            needed = []
        if needed:
            raise UserError(f"{where}: {text!r} is a class whose constructor needs {needed}; a scorer class "
                            "is built with no arguments")
        fn = obj.__call__
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {text!r}: its signature cannot be read; accepted: {ACCEPTED}") from None
    params = [p for name, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
              and not (inspect.isclass(obj) and name == "self")]
    names = {p.name for p in params}
    required = {p.name for p in params if p.default is p.empty}
    if "solution_str" in names and required <= set(VERL_ARGS):
        return "verl"
    if "completions" in names:
        return "trl"  # other required names are dataset columns, passed by name
    if {"prompts", "responses"} <= names and required <= {"prompts", "responses"}:
        return "longrl"
    raise UserError(f"{where}: {text!r} takes {sig}, which fits none of the accepted signatures: {ACCEPTED}")


def check_function(text: str, where: str, base_dir: str | Path | None = None) -> str:
    """Import ``text`` and check its signature (config validation); returns its form."""
    spec = parse_function(text, where, base_dir)
    return signature_form(load_function(spec, where), where, text)


# ----------------------------------------------------------------------------- what a call returns


def _number(x: Any) -> tuple[float | None, str]:
    """A returned reward as a finite float, or (None, why not)."""
    if isinstance(x, (str, bytes)):
        return None, f"returned a {type(x).__name__} ({str(x)[:40]!r}), not a number"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None, f"returned a {type(x).__name__}, not a number"
    if not math.isfinite(v):
        return None, f"returned {v}"
    return v, ""


def _plain(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, type(None))) else str(v)[:_SHOWN]


def normalise(x: Any) -> tuple[float, str, dict]:
    """One returned item as ``(value, reason, parts)``: a number, a dict with ``score``, a Score, or None."""
    if x is None:
        return 0.0, "not_applicable", {}
    parts: dict = {}
    reason = "ok"
    if isinstance(x, Score):
        x, reason, parts = x.value, x.reason, dict(x.parts)
    elif isinstance(x, dict):
        if "score" not in x:
            return 0.0, "bad_return", {"detail": f"returned a dict without 'score' (keys {sorted(map(str, x))[:8]})"}
        parts = {str(k): _plain(v) for k, v in x.items() if k != "score"}
        x = x["score"]
    v, why = _number(x)
    if v is None:
        return 0.0, "bad_return", {"detail": why}
    return v, reason, parts


def normalise_batch(out: Any, n: int) -> list[tuple[float, str, dict]]:
    """A batch function's return: a sequence of ``n`` items, else every item is a bad return."""
    if isinstance(out, (str, bytes, dict)) or not hasattr(out, "__len__") or not hasattr(out, "__iter__"):
        return [(0.0, "bad_return", {"detail": f"returned a {type(out).__name__}, not a list of {n} rewards"})] * n
    out = list(out)
    if len(out) != n:
        return [(0.0, "bad_return", {"detail": f"returned {len(out)} rewards for {n} responses"})] * n
    return [normalise(x) for x in out]


# ----------------------------------------------------------------------------- the worker process


def _worker_main(conn, spec: FunctionSpec, form: str) -> None:
    """Load the function, then answer ``[(args, kwargs, n), ...]`` with one ``(status, result)`` per call.

    ``n`` is None for a call that scores one response (verl's form), else the batch size. The
    result is a list of ``(value, reason, parts)``, or the traceback when the call raised.
    """
    from longrl.rewards.math_pool import _limit_self

    _limit_self(None)  # die with the parent
    try:
        fn = load_function(spec, spec.text)
        if inspect.isclass(fn):
            fn = fn()
    except BaseException:  # noqa: BLE001 - reported to the parent, which refuses to start
        conn.send(("boot_error", traceback.format_exc()))
        return
    conn.send(("ready", form))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        for args, kwargs, n in msg:
            try:
                out = fn(*args, **kwargs)
                result = [normalise(out)] if n is None else normalise_batch(out, n)
                status = "ok"
            except BaseException as e:  # noqa: BLE001 - user code: a raise (even SystemExit) scores 0, the
                # worker lives on; the traceback starts at the user's frame, not this loop's
                status, result = "error", "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
            try:
                conn.send((status, result))
            except Exception as e:  # noqa: BLE001 - a part that does not pickle
                conn.send(("error", f"the result could not be sent back: {type(e).__name__}: {e}"))


class _Worker:
    def __init__(self, ctx: Any, spec: FunctionSpec, form: str):
        from longrl.rewards.math_pool import _WORKER_PROCESS

        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = _WORKER_PROCESS["spawn"](target=_worker_main, args=(child, spec, form), daemon=True)
        self.proc.start()
        child.close()
        self.pending: deque[int] = deque()  # call indices sent, oldest (running) first
        self.since = 0.0  # when the running call started (or the previous one ended)

    def boot(self, timeout: float) -> str | None:
        """Wait for the worker to load the function; None when ready, else why not."""
        if not self.conn.poll(timeout):
            return "it did not start in time"
        try:
            tag, info = self.conn.recv()
        except (EOFError, OSError):
            return f"it exited with status {self.proc.exitcode}"
        return None if tag == "ready" else info

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class FunctionPool:
    """``workers`` processes calling one user function; each call ends within ``timeout`` seconds.

    Results come back per call, so a worker that hangs loses only the call it is on: it is
    killed and replaced, and the calls queued behind it are sent to the replacement.
    """

    def __init__(self, spec: FunctionSpec, form: str, *, workers: int = 1, timeout: float = 30.0,
                 where: str = "reward function"):
        self.spec, self.form, self.timeout, self.where = spec, form, float(timeout), where
        self._ctx = mp.get_context("spawn")
        self.workers = max(1, workers)
        self._workers: list[_Worker | None] = [None] * self.workers
        self._lock = threading.Lock()
        for i in range(len(self._workers)):
            why = self._start(i)
            if why is not None:
                self.close()
                raise UserError(f"{where}: {spec.text!r} failed to load in its worker process:\n{why.strip()}")

    def _start(self, i: int) -> str | None:
        w = _Worker(self._ctx, self.spec, self.form)
        why = w.boot(_BOOT_TIMEOUT)
        if why is not None:
            w.kill()
            return why
        self._workers[i] = w
        return None

    def run(self, calls: list[tuple[tuple, dict, int | None]]) -> list[tuple[str, Any]]:
        """``(status, result)`` per call, in order: ``ok`` / ``error`` as the worker sent them, or
        ``timeout`` / ``crash`` with a detail."""
        with self._lock:
            results: list[tuple[str, Any] | None] = [None] * len(calls)
            for i in range(len(self._workers)):
                if self._workers[i] is None:
                    self._start(i)  # replaces one that failed to restart last time; if it fails again,
                    # the calls are crashes (a worker that never loads was refused when the pool was built)
            alive = [i for i, w in enumerate(self._workers) if w is not None]
            if not alive:
                return [("crash", "the worker process could not be restarted")] * len(calls)
            n = len(calls)
            bounds = [round(k * n / len(alive)) for k in range(len(alive) + 1)]
            for k, i in enumerate(alive):
                self._send(i, list(range(bounds[k], bounds[k + 1])), calls, results)
            while any(w is not None and w.pending for w in self._workers):
                self._collect(calls, results)
            return results  # type: ignore[return-value]

    def _send(self, i: int, todo: list[int], calls, results) -> None:
        w = self._workers[i]
        if not todo:
            return
        if w is None:
            for j in todo:
                results[j] = ("crash", "the worker process could not be restarted")
            return
        try:
            w.conn.send([calls[j] for j in todo])
        except (BrokenPipeError, OSError):
            pass  # the worker died; _collect sees it
        except Exception as e:  # noqa: BLE001 - arguments that do not pickle: those responses score 0
            for j in todo:
                results[j] = ("error", f"the call could not be sent to the worker: {type(e).__name__}: {e}")
            return
        w.pending = deque(todo)
        w.since = time.monotonic()

    def _collect(self, calls, results) -> None:
        busy = [w for w in self._workers if w is not None and w.pending]
        now = time.monotonic()
        wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
             timeout=max(0.0, min(w.since + self.timeout for w in busy) - now))
        for i, w in enumerate(self._workers):
            if w is None or not w.pending:
                continue
            dead = False
            try:
                while w.pending and w.conn.poll():
                    results[w.pending.popleft()] = w.conn.recv()
                    w.since = time.monotonic()
            except (EOFError, OSError):
                dead = True
            if not w.pending:
                continue
            now = time.monotonic()
            if dead or not w.proc.is_alive():
                self._fail(i, ("crash", f"the worker died (exit status {w.proc.exitcode})"), calls, results)
            elif now >= w.since + self.timeout:
                self._fail(i, ("timeout", f"killed after {self.timeout:g} s"), calls, results)

    def _fail(self, i: int, outcome: tuple[str, str], calls, results) -> None:
        w = self._workers[i]
        results[w.pending.popleft()] = outcome
        rest = list(w.pending)
        w.kill()
        self._workers[i] = None
        self._start(i)
        self._send(i, rest, calls, results)

    def close(self) -> None:
        """Stop the workers. Safe to call twice."""
        for i, w in enumerate(self._workers):
            if w is None:
                continue
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            w.proc.join(timeout=1)
            w.kill()
            self._workers[i] = None


# ----------------------------------------------------------------------------- the scorer


class FunctionScorer:
    """A user reward function as a :class:`~longrl.rewards.Scorer`, in ``workers`` processes.

    ``timeout`` is seconds per call: per response for verl's form, per batch (or per worker's
    share of one) for TRL's and longrl's.
    """

    def __init__(self, text: str, *, timeout: float = 30.0, workers: int = 1,
                 base_dir: str | Path | None = None, where: str = "reward function"):
        spec = parse_function(text, where, base_dir)
        fn = load_function(spec, where)  # here too, to know its signature; it runs in the workers
        self.text = text
        self.form = signature_form(fn, where, text)
        self.params = _accepted(fn)
        self.pool = FunctionPool(spec, self.form, workers=workers, timeout=timeout, where=where)
        self._traced: set[str] = set()

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Score]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return []
        if self.form == "verl":
            calls = [((), self._kwargs(_verl_kwargs(p, r)), None) for p, r in zip(prompts, responses)]
            sizes = [1] * len(calls)
        else:
            calls, sizes = [], []
            for chunk in _chunks(len(prompts), self.pool.workers):
                ps, rs = [prompts[i] for i in chunk], [responses[i] for i in chunk]
                if self.form == "trl":
                    calls.append(((), self._kwargs(_trl_kwargs(ps, rs)), len(chunk)))
                else:
                    calls.append(((ps, rs), {}, len(chunk)))
                sizes.append(len(chunk))
        scores: list[Score] = []
        for (status, result), size in zip(self.pool.run(calls), sizes):
            if status == "ok":
                scores += [Score(v, reason, parts) for v, reason, parts in result]
                continue
            reason = "reward_error" if status == "error" else status
            text = str(result)
            parts = {"detail": text.strip().splitlines()[-1][-_SHOWN:] if text.strip() else status,
                     "source": self.text}
            if reason not in self._traced:  # the first of each kind carries the whole traceback
                self._traced.add(reason)
                scores.append(Score(0.0, reason, parts | {"traceback": text}))
                size -= 1
            scores += [Score(0.0, reason, dict(parts)) for _ in range(size)]
        for s in scores:
            if s.reason == "bad_return":
                s.parts["source"] = self.text
                if "bad_return" not in self._traced:  # shown once too: what came back instead of a number
                    self._traced.add("bad_return")
                    s.parts["traceback"] = s.parts.get("detail", "")
        return scores

    def _kwargs(self, kwargs: dict) -> dict:
        """Only the keyword arguments the function takes (all of them with a ``**kwargs``)."""
        return kwargs if self.params is None else {k: v for k, v in kwargs.items() if k in self.params}

    def close(self) -> None:
        self.pool.close()


def _accepted(obj: Any) -> set[str] | None:
    fn = obj.__call__ if inspect.isclass(obj) else obj
    params = inspect.signature(fn).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def _chunks(n: int, parts: int) -> list[range]:
    parts = max(1, min(parts, n))
    bounds = [round(k * n / parts) for k in range(parts + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def _verl_kwargs(p: Prompt, response: str) -> dict:
    return {"data_source": p.extra.get("data_source", p.task), "solution_str": response,
            "ground_truth": p.reference, "extra_info": p.extra.get("extra_info")}


def _trl_kwargs(prompts: list[Prompt], responses: list[str]) -> dict:
    chat = any(p.messages for p in prompts)
    kwargs: dict[str, Any] = {
        "prompts": [p.messages or [{"role": "user", "content": p.text}] for p in prompts] if chat
        else [p.text for p in prompts],
        "completions": [[{"role": "assistant", "content": r}] for r in responses] if chat else list(responses),
        "reference": [p.reference for p in prompts],
    }
    for key in sorted({k for p in prompts for k in p.extra}):
        kwargs.setdefault(key, [p.extra.get(key) for p in prompts])
    return kwargs
