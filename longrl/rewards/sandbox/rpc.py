"""Function-call sessions: Python code loaded once in a sandbox process, its functions called
with plain values from the trusted parent (used by the assert-style harness).

A reply is untrusted data read in the trusted process, so reading it is bounded twice: its frame
may not exceed the run's output cap (``Limits.output_bytes``; a larger one is ``output_limit``),
and decoding it must end by the call's deadline, or ``_DECODE_GRACE_S`` after the reply arrived
if that is later (past it: ``timeout``, and the process is killed). See ``_codec`` for the hash
collisions that once made one reply cost minutes to decode.
"""

from __future__ import annotations

import math
import os
import secrets
import subprocess
import time
from typing import TYPE_CHECKING, Any

from longrl.rewards.sandbox._procs import _MAX_FRAME, _Protocol
from longrl.rewards.sandbox.executor import Limits, RunResult, _Cell, _status

if TYPE_CHECKING:
    from longrl.rewards.sandbox.executor import Sandbox

_DECODE_GRACE_S = 0.5  # a reply that arrives in time always gets this long to be decoded


class CallFailed(Exception):
    """A function call in the sandbox did not return a value. ``verdict`` says why; ``fatal``
    means the process is gone (a new session is needed for further calls)."""

    def __init__(self, verdict: str, message: str, fatal: bool):
        super().__init__(message)
        self.verdict, self.fatal = verdict, fatal


class RpcSession:
    """Python code loaded once in a sandbox process; its functions called with plain values.

    The trusted side owns the verdict: it sends ``(nonce, function, args)``; the answer counts
    only if it carries that nonce, and its value is decoded into plain built-in types (see
    ``_codec``) before any comparison, which happens in the caller's process.
    """

    def __init__(self, sandbox: Sandbox, code: str, limits: Limits):
        self.sb, self.lim = sandbox, limits
        self.cell: _Cell | None = sandbox._acquire("run")
        self.proc = self.cell.proc
        self.oom0 = self.cell.cgroup.oom_kills() if self.cell.cgroup else 0
        nonce = secrets.token_hex(16)
        try:
            # one CPU budget for the whole session: every call's wall clock is enforced separately
            head = sandbox._job_head(self.cell, "rpc", {"main.py": 0o600}, [code.encode()], limits,
                                     cpu_s=int(min(600, 10 * math.ceil(limits.time_s))) + 1, code=code,
                                     nonce=nonce)
            try:
                self.proc.send(head, code.encode())
            except BrokenPipeError:
                pass
        except BaseException:
            self._finish("killed")  # never keep the cell
            raise
        self._expect(nonce, "loaded", time.monotonic() + limits.time_s)

    def call(self, fn: str, args: tuple, deadline: float | None = None) -> Any:
        from longrl.rewards.sandbox._codec import decode_value, encode_value

        if self.proc is None:
            raise CallFailed("runtime_error", "the sandbox process has exited", fatal=True)
        nonce = secrets.token_hex(16)
        try:
            self.proc.send({"id": nonce, "fn": fn, "args": encode_value(tuple(args))})
        except BrokenPipeError:
            pass
        deadline = deadline or time.monotonic() + self.lim.time_s
        frame = self._expect(nonce, "id", deadline)
        if "error" in frame:
            raise CallFailed("runtime_error", str(frame["error"])[:500], fatal=False)
        try:
            return decode_value(frame.get("value"), max(deadline, time.monotonic() + _DECODE_GRACE_S))
        except TimeoutError:
            self._finish("timeout")
            raise CallFailed("timeout", "no answer in time: reading the return value ran past the deadline",
                             fatal=True) from None
        except (ValueError, TypeError, RecursionError, MemoryError) as e:
            raise CallFailed("runtime_error", f"unreadable return value: {e}", fatal=False) from None

    def _expect(self, nonce: str, key: str, deadline: float) -> dict:
        while True:
            try:
                frame = self.proc.pump(deadline, self.lim.output_bytes, want_frame=True,
                                       frame_cap=min(_MAX_FRAME, self.lim.output_bytes))
            except (_Protocol, ValueError):
                self.proc.overflow = True
                frame = None
            if frame is not None:
                if frame.get(key) == nonce:
                    return frame
                continue  # a frame the stub did not send for this call: ignored
            why = "output_limit" if self.proc.overflow else ("timeout" if any(self.proc.open.values()) else None)
            res = self._finish(why)
            raise CallFailed(res.status if res.status != "ok" else "runtime_error",
                             f"no answer ({res.status}, exit {res.exit_code}): "
                             + res.stderr.decode("utf-8", "replace")[-300:], fatal=True)

    def _finish(self, why: str | None) -> RunResult:
        proc, cell = self.proc, self.cell
        if why:
            proc.kill(why)
        elif proc.popen.poll() is None:
            os.close(proc.jobs_w)
            proc.jobs_w = None
            try:
                proc.popen.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                proc.kill("timeout")
        code = proc.reap()
        oom = cell.cgroup is not None and cell.cgroup.oom_kills() > self.oom0
        res = RunResult(_status(code, proc.killed_for, oom, bytes(proc.buf["err"])), code,
                        bytes(proc.buf["out"]), bytes(proc.buf["err"][-8192:]), 0.0)
        cell.proc = None
        self.proc = None
        self.sb._release(cell)
        self.cell = None
        return res

    def close(self) -> None:
        if self.proc is not None:
            self._finish(None)

    def __enter__(self) -> RpcSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
