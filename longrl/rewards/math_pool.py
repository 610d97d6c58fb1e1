"""A pool of worker processes that run math-verify with a hard per-answer deadline.

Why processes and not math-verify's own timeout: math-verify times out with ``signal.alarm``,
which only works on the main thread of the main interpreter (verl and TRL both shipped "grader
silently returns 0" and "trainer hangs" bugs from this), and a signal cannot interrupt a long
computation inside C code. Here math-verify runs with its timeouts off
(``parsing_timeout=None``, ``timeout_seconds=None``) in a worker process, and the parent enforces
the deadline by killing the worker (SIGKILL) and starting a fresh one. A worker that dies (a
crash, an out-of-memory kill) is replaced the same way. So every check ends within ``timeout``
seconds of being handed to a worker, whatever the input, and the caller never blocks forever.

Workers start with the ``forkserver`` method by default: the server process imports math-verify
once (about a second), and each new worker is a fork of it (milliseconds), so replacing a killed
worker is cheap. ``fork`` from the trainer is avoided because the trainer holds threads (torch).
Workers never re-import the parent's ``__main__`` (multiprocessing's default for forkserver and
spawn children): they need nothing from it, a training script's imports (torch) would be paid in
every worker, and a script read on stdin (``python - <<EOF``) has no file to import, so every
worker died on start (see :func:`_popen_without_main`).

    >>> pool = VerifyPool(workers=1, timeout=10)
    >>> [o.status for o in pool.run([("\\\\frac{1}{2}", "0.5"), ("3", "4")])]
    ['ok', 'wrong']
    >>> pool.close()
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import time
import types
import zlib
from collections import deque
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import islice
from multiprocessing.connection import Connection, wait
from typing import Any

_BOOT_TIMEOUT = 120.0  # s: a worker that has not imported math-verify by then is broken
_BOOT_FAILURES = 3  # consecutive failed starts before the pool gives up with an error
_TINY = 1e-3  # below this, two different exact rationals are never "equal" (see _tiny_exact_mismatch)
_PREFETCH = 2  # checks sent to a worker ahead of its results
_AFFINITY_WINDOW = 64  # queued checks searched for one whose reference this worker has seen
_PREFETCH_MAX_CHARS = 16_000  # larger checks are only sent to an idle worker (pipe buffer: 64 KiB)
_PRELOADED = False


@dataclass(frozen=True)
class Outcome:
    """The result of one check.

    ``status``: ``ok`` (equivalent), ``wrong``, ``parse_error`` (the answer did not parse into
    mathematics and its text differs from the reference's), ``bad_reference`` (the reference did
    not parse), ``timeout`` (killed at the deadline), ``crash`` (the worker died or raised).
    ``seconds`` is the time from handing the check to a worker until its result (or its kill).
    """

    status: str
    seconds: float = 0.0
    detail: str = ""


def _wrap(latex: str) -> str:
    # A box makes math-verify's LaTeX extractor take the whole string as one expression.
    return "\\boxed{" + latex + "}"


@lru_cache(maxsize=4096)
def _parse(latex: str, timeout: int | None) -> tuple:
    """math-verify's parse, remembered: the k responses to a prompt share one reference, and
    many of them give the same final answer. In a worker, a parse that hangs is killed with the
    worker (and its cache) and so is never stored; in-process with math-verify's own timeout,
    the empty result of a timed-out parse is stored like any other."""
    from math_verify import parse

    return tuple(parse(_wrap(latex), parsing_timeout=timeout))


def verify_answer(answer: str, reference: str, *, timeout: int | None = None) -> str:
    """Compare one extracted answer with one reference using math-verify; returns a status.

    ``timeout=None`` turns math-verify's own signal-based timeouts off, as the pool's workers do;
    an integer uses them (main thread only), which is how the single-process baseline in
    ``bench/math_grader.py`` runs.

    >>> verify_answer("\\\\dfrac{1}{2}", "0.5"), verify_answer("x = 3", "4")
    ('ok', 'wrong')
    """
    from math_verify import verify
    from sympy import Basic, MatrixBase

    gold = list(_parse(reference, timeout))
    if not gold:
        return "bad_reference"
    pred = list(_parse(answer, timeout))
    if not pred:
        return "parse_error"
    if verify(gold, pred, timeout_seconds=timeout):
        return "wrong" if _tiny_exact_mismatch(gold, pred) else "ok"
    if not any(isinstance(p, (Basic, MatrixBase)) for p in pred):
        return "parse_error"
    return "wrong"


def _tiny_exact_mismatch(gold: list, pred: list) -> bool:
    """math-verify rounds numbers to 6 decimals before comparing, so two different numbers below
    about 1e-6 compare equal (NOTES.md: 1/2^99 "equals" 1/2^98). When both sides are plain
    numbers that small, compare them exactly (two exact rationals) or to 1e-6 relative (when one
    is a decimal). Larger numbers keep math-verify's rounding (0.333333 for 1/3).

    >>> from sympy import Float, Rational
    >>> _tiny_exact_mismatch([Rational(1, 2**99)], [Rational(1, 2**98)])
    True
    >>> _tiny_exact_mismatch([Rational(1, 10**4)], [Float("0.0001")])
    False
    """
    g = next((v for v in map(_plain_number, gold) if v is not None), None)
    p = next((v for v in map(_plain_number, pred) if v is not None), None)
    if g is None or p is None or g == p or max(abs(g), abs(p)) >= _TINY:
        return False
    if g.is_Rational and p.is_Rational:
        return True
    return bool(abs(g - p) > 1e-6 * max(abs(g), abs(p)))


def _plain_number(x: Any) -> Any:
    """The value of an expression made only of numbers (``2^{-99}``, ``\\frac{1}{3}``), else None."""
    from sympy import Basic, Eq

    if isinstance(x, Eq):  # "x = 10^{-20}": the value is the right-hand side
        x = x.rhs
    if not isinstance(x, Basic) or not x.is_number:
        return None
    v = x.doit()
    return v if (v.is_Rational or v.is_Float) else None


def _limit_self(memory_mb: int | None) -> None:
    """Best-effort limits inside a worker: die with the parent, cap the address space."""
    try:
        import ctypes
        import signal

        # PR_SET_PDEATHSIG = 1: if the forkserver (our parent) goes away, so do we.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if memory_mb:
        import resource

        # The cap is on top of what the worker already maps: a forkserver that imported the
        # trainer's main module (and torch with it) can map gigabytes that this check never uses.
        try:
            with open("/proc/self/statm") as f:
                mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):  # pragma: no cover - not Linux
            mapped = 0
        limit = mapped + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# One check of each shape math answers take. Running them once makes sympy import its lazily
# loaded parts (sets, matrices, solvers) and math-verify build its regexes and parser.
_WARM_UP = [
    ("\\frac{1}{2}", "0.5"),
    ("(1, 2]", "(1,2]"),
    ("\\{1, 2\\}", "2, 1"),
    ("x = 3", "3"),
    ("50\\%", "\\frac{1}{2}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("2^{1/2}", "\\sqrt{2}"),
    ("\\text{Evelyn}", "\\text{(A)}"),
    ("90^\\circ", "90"),
    ("(x+1)^2", "x^2 + 2x + 1"),
    ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}"),
    ("x > 2", "(2, \\infty)"),
]


def _warm_up() -> None:
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # "timeout is disabled" warnings
    for answer, reference in _WARM_UP:
        verify_answer(answer, reference)


def _worker_main(conn: Connection, memory_mb: int | None) -> None:
    """Worker loop: receive ``(seq, answer, reference)``, send ``(seq, status)``, in order.

    ``("cancel", seq)`` withdraws a check sent ahead that another worker has taken over: before
    starting a check the worker reads every message waiting, and answers a withdrawn check with
    ``"skipped"`` instead of running it. ``None`` (or a closed pipe) stops the worker.
    """
    _limit_self(memory_mb)
    _warm_up()  # nearly free when the forkserver warmed up already (see the end of this module)
    conn.send(("ready", ""))
    pending: deque[tuple[int, str, str]] = deque()
    cancelled: set[int] = set()
    while True:
        try:
            msgs = [conn.recv()] if not pending else []
            while conn.poll():
                msgs.append(conn.recv())
        except (EOFError, OSError):
            return  # the parent closed the pipe or died
        for msg in msgs:
            if msg is None:
                return
            if msg[0] == "cancel":
                cancelled.add(msg[1])
            else:
                pending.append(msg)
        if not pending:
            continue
        seq, answer, reference = pending.popleft()
        if seq in cancelled:
            cancelled.discard(seq)
            conn.send((seq, "skipped"))
            continue
        try:
            status = verify_answer(answer, reference)
        except MemoryError:
            status = "crash:memory"
        except Exception as e:  # noqa: BLE001 - any failure of the parser is the answer's fault
            status = f"crash:{type(e).__name__}"
        conn.send((seq, status))


def _preparation_data_without_main(name: str) -> dict:
    """multiprocessing's preparation data for a child process, less the parent's ``__main__``."""
    from multiprocessing import spawn

    data = spawn.get_preparation_data(name)
    data.pop("init_main_from_name", None)  # a child told neither runs no main module at all
    data.pop("init_main_from_path", None)
    return data


@cache
def _popen_without_main(method: str) -> type:
    """The ``forkserver`` or ``spawn`` Popen, with children that skip re-importing ``__main__``.

    Such a child first re-runs the file named by the parent's ``__main__.__file__`` (or the
    module named by its ``__spec__``), so that objects defined there unpickle; for ``python -
    <<EOF`` that "file" is ``<stdin>``, which does not exist, and the child died with
    FileNotFoundError before any of our code ran. Our workers' target lives in this module, so
    they need no main module. The only change is to the preparation data: the stdlib Popen's own
    ``_launch`` runs unchanged, rebound to a ``spawn`` namespace whose ``get_preparation_data``
    drops the main-module entries. Nothing global is patched: other processes the program
    starts are unaffected."""
    from multiprocessing import popen_forkserver, popen_spawn_posix, spawn

    base = {"forkserver": popen_forkserver.Popen, "spawn": popen_spawn_posix.Popen}[method]
    shim = types.SimpleNamespace(**{**vars(spawn), "get_preparation_data": _preparation_data_without_main})
    launch = base._launch
    launch = types.FunctionType(launch.__code__, {**launch.__globals__, "spawn": shim}, launch.__name__,
                                launch.__defaults__, launch.__closure__)
    return type(base.__name__, (base,), {"_launch": launch})


class _ForkServerWorkerProcess(mp.context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # multiprocessing's name
        return _popen_without_main("forkserver")(process_obj)


class _SpawnWorkerProcess(mp.context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _popen_without_main("spawn")(process_obj)


# fork needs nothing: its child is a copy of the parent and prepares nothing
_WORKER_PROCESS = {"forkserver": _ForkServerWorkerProcess, "spawn": _SpawnWorkerProcess}


class _Worker:
    def __init__(self, ctx: Any, memory_mb: int | None):
        self.conn, child = ctx.Pipe(duplex=True)
        process_cls = _WORKER_PROCESS.get(ctx.get_start_method(), ctx.Process)
        self.proc = process_cls(target=_worker_main, args=(child, memory_mb), daemon=True)
        self.proc.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        # Checks sent to this worker, oldest first, as [seq, check index, withdrawn]; the worker
        # runs the head, which it began at ``head_since`` (when the parent saw the previous
        # result: a slight over-estimate of the time left, never an under-estimate). A withdrawn
        # check was handed to another worker; this one skips it or its result is ignored.
        self.inflight: deque[list] = deque()
        self.head_since = 0.0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class VerifyPool:
    """``workers`` processes running :func:`verify_answer`, each check bounded by ``timeout`` s.

    ``memory_mb`` caps how much address space each worker may add (RLIMIT_AS) so an answer that
    sympy tries to expand fails with MemoryError rather than swapping the machine. The pool
    starts its workers at construction and keeps them warm across :meth:`run` calls. Each worker
    is sent up to ``_PREFETCH`` checks at once, so it never idles waiting for the parent to be
    scheduled (the parent shares the CPUs with the workers and the trainer). Counters
    ``restarts`` (workers replaced) and ``timeouts`` are kept for metrics.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 5.0,
        *,
        memory_mb: int | None = 4096,
        start_method: str = "forkserver",
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            _preload(self._ctx)
        self.restarts = 0
        self.timeouts = 0
        self._seq = 0  # numbers every message sent to a worker
        self._boot_failures = 0
        self._workers = [_Worker(self._ctx, memory_mb) for _ in range(workers)]
        self._closed = False
        self._owner = os.getpid()

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (tests kill one to check it is replaced)."""
        return [w.proc.pid for w in self._workers]

    def _replace(self, i: int) -> None:
        self._workers[i].kill()
        self._workers[i] = _Worker(self._ctx, self.memory_mb)
        self.restarts += 1

    def run(self, checks: list[tuple[str, str]]) -> list[Outcome]:
        """Check every ``(answer, reference)``; returns one :class:`Outcome` each, in order.

        Returns once every check has a result, a timeout or a crash: at most about
        ``len(checks) / workers * timeout`` seconds plus worker start-up.
        """
        if self._closed:
            raise RuntimeError("VerifyPool is closed")
        results: list[Outcome | None] = [None] * len(checks)
        queue = deque(range(len(checks)))
        n = len(self._workers)
        homes = [zlib.crc32(ref.encode("utf-8", "replace")) % n for _, ref in checks]
        # Done when every check has an outcome: a worker may still be busy with a check that
        # another worker took over (and finished); its deadline is enforced by the next run.
        while None in results:
            self._dispatch(queue, checks, homes)
            self._collect(queue, results)
        return results  # type: ignore[return-value]

    def _dispatch(self, queue: deque[int], checks: list[tuple[str, str]], homes: list[int]) -> None:
        for i, w in enumerate(self._workers):
            self._feed(i, w, queue, checks, homes)
        if queue:
            return
        # The queue is empty: a worker without work takes over a check waiting behind another
        # worker's running one, which may be about to hang until the deadline. This keeps the
        # tail of a batch short (two pathological answers sent to one worker overlap instead of
        # taking two timeouts one after the other).
        for i, w in enumerate(self._workers):
            if not w.ready or w.inflight:
                continue
            for v in self._workers:
                waiting = [e for e in list(v.inflight)[1:] if not e[2]]
                if waiting:
                    waiting[-1][2] = True
                    try:
                        v.conn.send(("cancel", waiting[-1][0]))
                    except (BrokenPipeError, OSError):
                        pass  # that worker died; its check is now this worker's anyway
                    queue.append(waiting[-1][1])
                    self._feed(i, w, queue, checks, homes)
                    break

    def _feed(
        self, i: int, w: _Worker, queue: deque[int], checks: list[tuple[str, str]], homes: list[int]
    ) -> None:
        while queue and w.ready and len(w.inflight) < _PREFETCH:
            # Prefer a check whose reference lives on this worker: the k responses to one
            # prompt share a reference, and math-verify's and sympy's caches then parse it
            # once per worker instead of once per check. Otherwise take the oldest check.
            j = next((j for j, t in enumerate(islice(queue, _AFFINITY_WINDOW)) if homes[t] == i), 0)
            task = queue[j]
            size = len(checks[task][0]) + len(checks[task][1])
            # A queued message must fit the pipe buffer (64 KiB on Linux), or send() would
            # block behind a check that may hang; big checks wait for an idle worker.
            if w.inflight and size > _PREFETCH_MAX_CHARS:
                return
            self._seq += 1
            try:
                w.conn.send((self._seq, checks[task][0], checks[task][1]))
            except (BrokenPipeError, OSError):
                return  # the worker died; _collect notices, replaces it and requeues
            del queue[j]
            if not w.inflight:
                w.head_since = time.monotonic()
            w.inflight.append([self._seq, task, False])

    def _collect(self, queue: deque[int], results: list[Outcome | None]) -> None:
        now = time.monotonic()
        deadlines = [w.head_since + self.timeout for w in self._workers if w.inflight]
        deadlines += [w.started + _BOOT_TIMEOUT for w in self._workers if not w.ready]
        waitables: list[Any] = [w.conn for w in self._workers] + [w.proc.sentinel for w in self._workers]
        wait(waitables, timeout=max(0.0, min(deadlines, default=now + 1.0) - now))
        for i, w in enumerate(self._workers):
            dead = False
            try:
                while w.conn.poll():
                    tag, status = w.conn.recv()
                    now = time.monotonic()
                    if tag == "ready":
                        w.ready = True
                        self._boot_failures = 0
                    elif w.inflight and tag == w.inflight[0][0]:
                        _, task, withdrawn = w.inflight.popleft()
                        if not withdrawn:
                            kind, detail = _split(status)
                            results[task] = Outcome(kind, seconds=now - w.head_since, detail=detail)
                        w.head_since = now
            except (EOFError, OSError):
                dead = True
            now = time.monotonic()
            if dead or not w.proc.is_alive():
                self._fail(i, "crash", "worker died", queue, results, now)
            elif w.inflight and now >= w.head_since + self.timeout:
                self.timeouts += 1
                self._fail(i, "timeout", f"killed after {self.timeout:g} s", queue, results, now)
            elif not w.ready and now >= w.started + _BOOT_TIMEOUT:
                self._fail(i, "crash", "worker did not start", queue, results, now)

    def _fail(self, i: int, status: str, detail: str, queue, results, now: float) -> None:
        w = self._workers[i]
        if w.inflight:
            _, head, withdrawn = w.inflight.popleft()
            if not withdrawn:
                results[head] = Outcome(status, seconds=now - w.head_since, detail=detail)
            # Checks queued behind it are not at fault; withdrawn ones are another worker's now.
            queue.extendleft(reversed([task for _, task, gone in w.inflight if not gone]))
        elif not w.ready:
            self._boot_failures += 1
            if self._boot_failures >= _BOOT_FAILURES:
                code = w.proc.exitcode
                last = f"exited with status {code}" if code is not None else "was not ready in time"
                self.close()
                raise RuntimeError(
                    f"math grading workers failed to start {_BOOT_FAILURES} times in a row (the last "
                    f"{last}; a worker's traceback, if any, is on stderr): is math-verify installed "
                    "-- python -c 'import math_verify' -- and is memory_mb large enough?"
                )
        self._replace(i)

    def close(self) -> None:
        """Stop every worker; the pool cannot be used afterwards. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._owner:
            return  # a forked copy (e.g. a data-loader worker) must not stop its parent's workers
        for w in self._workers:
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for w in self._workers:
            w.proc.join(timeout=1)
            w.kill()

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a scorer dropped without close() must not leak processes
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: modules may be gone
            pass


def _split(status: str) -> tuple[str, str]:
    if status.startswith("crash:"):
        return "crash", status[6:]
    return status, ""


def _preload(ctx: Any) -> None:
    """Have the forkserver import math-verify once, so each worker forks from a warm process.

    The preload list only takes effect if the forkserver is not running yet; where another part
    of the program started it first, workers import math-verify themselves (slower start, same
    results). It leaves out multiprocessing's default ``__main__``: the workers do not need it
    (see :func:`_popen_without_main`), and ``<stdin>`` cannot be imported.
    """
    global _PRELOADED
    if not _PRELOADED:
        ctx.set_forkserver_preload(["math_verify", "sympy", __name__])
        _PRELOADED = True


def _imported_by_forkserver() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.endswith(
            os.path.join("multiprocessing", "forkserver.py")
        ):
            return True
        frame = frame.f_back
    return False


# The forkserver imports this module (see _preload): warming up there, once, means every worker
# forked from it, including each replacement for a killed one, starts warm (measured on the
# 2-core machine under load: 0.4 s to replace a worker when each warmed up itself).
if _imported_by_forkserver():
    _warm_up()
