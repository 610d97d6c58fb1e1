"""Plumbing of one sandbox process as the parent sees it: its pipes and framing (``_Proc``),
and a cell's cgroups (``_Cgroup``, v1 pids + memory). Used by :mod:`.executor` only."""

from __future__ import annotations

import json
import marshal
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from longrl.rewards.sandbox.executor import Limits

_MAX_FRAME = 16 << 20  # a reply frame larger than this is a protocol violation (output_limit)
# (function-call replies are capped lower, at the run's output cap: see RpcSession)


class _Cgroup:
    """One cell's pids + memory cgroups (v1). ``None`` fields when a controller is unusable."""

    def __init__(self, pids_dir: Path | None, mem_dir: Path | None):
        self.pids, self.mem = pids_dir, mem_dir
        self._mem_limit = int((mem_dir / "memory.limit_in_bytes").read_text())  # unlimited at first

    @staticmethod
    def create(parent: dict[str, Path], name: str) -> _Cgroup:
        dirs = {}
        for ctl in ("pids", "memory"):
            d = parent[ctl] / name
            d.mkdir()
            dirs[ctl] = d
        return _Cgroup(dirs["pids"], dirs["memory"])

    def join(self, pids: set[int]) -> None:
        for d in (self.pids, self.mem):
            for pid in pids:
                (d / "cgroup.procs").write_text(str(pid))

    def set_limits(self, limits: Limits) -> None:
        (self.pids / "pids.max").write_text(str(limits.nproc + 4))  # + bwrap, its init, the stub
        want = limits.memory_mb << 20
        if want == self._mem_limit:
            return
        files = ["memory.limit_in_bytes"]
        if (self.mem / "memory.memsw.limit_in_bytes").exists():
            files.append("memory.memsw.limit_in_bytes")  # swap too, or a bomb swaps instead of dying
        # memsw must stay >= limit: raise memsw first, lower limit first
        try:
            for f in files if want < self._mem_limit else reversed(files):
                (self.mem / f).write_text(str(want))
        except OSError:  # EBUSY: below what the waiting stub already uses; RLIMIT_AS still holds
            self._mem_limit = int((self.mem / "memory.limit_in_bytes").read_text())
            return
        self._mem_limit = want

    def oom_kills(self) -> int:
        for line in (self.mem / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return int((self.mem / "memory.failcnt").read_text())

    def kill_all(self) -> None:
        """SIGKILL whatever is left in the cell (nothing, normally: the pid namespace died)."""
        for _ in range(100):
            pids = [int(p) for p in (self.pids / "cgroup.procs").read_text().split()]
            if not pids:
                return
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        for d in (self.pids, self.mem):
            try:
                d.rmdir()
            except OSError:
                pass


def _remove_stale(base: Path) -> None:
    """Remove empty cgroups left by pools whose process died without closing (a SIGKILLed
    trainer): ``longrl-sandbox-<pid>-<hex>`` with no live <pid>."""
    for d in base.glob("longrl-sandbox-*-*"):
        pid = d.name.split("-")[2]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        for cell in d.glob("cell*"):
            try:
                cell.rmdir()
            except OSError:
                pass
        try:
            d.rmdir()
        except OSError:
            pass


def _cgroup_parents(tag: str) -> dict[str, Path] | None:
    """Create ``<own cgroup>/<tag>`` under the v1 pids and memory hierarchies, or None."""
    own = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctls, path = line.split(":", 2)
            for c in ctls.split(","):
                own[c] = path
        out = {}
        for ctl in ("pids", "memory"):
            root = Path("/sys/fs/cgroup") / ctl
            if ctl not in own or not (root / "cgroup.procs").exists():
                return None
            base = root / own[ctl].lstrip("/")
            _remove_stale(base)
            d = base / tag
            d.mkdir(parents=True, exist_ok=True)
            out[ctl] = d
        return out
    except OSError:
        return None


class _Proc:
    """One started sandbox process and its pipes, seen from the parent."""

    def __init__(self, popen: subprocess.Popen, jobs_w: int, replies_r: int, info_r: int | None):
        self.popen, self.jobs_w, self.replies_r, self.info_r = popen, jobs_w, replies_r, info_r
        self.init_pidfd: int | None = None
        self.buf = {"out": bytearray(), "err": bytearray(), "rep": bytearray()}
        self.open = {"out": True, "err": True, "rep": True}
        self.total_out = 0
        self.overflow = False
        self.killed_for: str | None = None
        self.ready = False

    # --- reading -------------------------------------------------------------------------
    def pump(self, deadline: float, output_cap: int, want_frame: bool,
             frame_cap: int = _MAX_FRAME) -> dict | None:
        """Read the pipes until a full reply frame (``want_frame``), or all pipes close, or the
        deadline. Returns the frame's ``(head, payload)`` head with payload under ``_payload``.
        A frame announcing more than ``frame_cap`` bytes raises :class:`_Protocol` as soon as its
        8-byte header is in, before the rest is read."""
        sel = selectors.DefaultSelector()
        fds = {"out": self.popen.stdout.fileno(), "err": self.popen.stderr.fileno(), "rep": self.replies_r}
        try:
            for k, fd in fds.items():
                if self.open[k]:
                    sel.register(fd, selectors.EVENT_READ, k)
            while True:
                if want_frame:
                    frame = self._take_frame(frame_cap)
                    if frame is not None:
                        return frame
                if not any(self.open.values()):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                for key, _ in sel.select(left):
                    k = key.data
                    data = os.read(key.fd, 1 << 16)
                    if not data:
                        self.open[k] = False
                        sel.unregister(key.fd)
                        continue
                    if k == "rep":
                        self.buf[k] += data
                        if len(self.buf[k]) > _MAX_FRAME + 8:
                            self.overflow = True
                            return None
                        continue
                    self.total_out += len(data)
                    if self.total_out > output_cap:
                        self.overflow = True
                        return None
                    self.buf[k] += data
        finally:
            sel.close()

    def drain(self, output_cap: int) -> None:
        """Read what the output pipes hold right now, without waiting for them to close."""
        sel = selectors.DefaultSelector()
        try:
            for k in ("out", "err"):
                if self.open[k]:
                    sel.register(self.popen.stdout.fileno() if k == "out" else self.popen.stderr.fileno(),
                                 selectors.EVENT_READ, k)
            while sel.get_map():
                ready = sel.select(0)
                if not ready:
                    return
                for key, _ in ready:
                    data = os.read(key.fd, 1 << 16)
                    if not data:
                        self.open[key.data] = False
                        sel.unregister(key.fd)
                        continue
                    self.total_out += len(data)
                    if self.total_out > output_cap:
                        self.overflow = True
                        return
                    self.buf[key.data] += data
        finally:
            sel.close()

    def _take_frame(self, frame_cap: int = _MAX_FRAME) -> dict | None:
        b = self.buf["rep"]
        if len(b) < 8:
            return None
        hl, pl = int.from_bytes(b[:4], "big"), int.from_bytes(b[4:8], "big")
        if hl + pl > min(frame_cap, _MAX_FRAME):
            self.overflow = True
            raise _Protocol("reply frame too large")
        if len(b) < 8 + hl + pl:
            return None
        try:
            head = json.loads(bytes(b[8 : 8 + hl]))
        except RecursionError:  # "[[[[..." deeper than the JSON reader's recursion limit
            raise _Protocol("reply frame nested too deeply") from None
        if not isinstance(head, dict):
            raise _Protocol("reply frame is not an object")
        head["_payload"] = bytes(b[8 + hl : 8 + hl + pl])
        del b[: 8 + hl + pl]
        return head

    def send(self, head: dict, payload: bytes = b"") -> None:
        h = marshal.dumps(head)  # to the stub, which must not pay for importing json
        data = memoryview(len(h).to_bytes(4, "big") + len(payload).to_bytes(4, "big") + h + payload)
        while data:
            data = data[os.write(self.jobs_w, data) :]

    # --- ending --------------------------------------------------------------------------
    def kill(self, why: str | None = None) -> None:
        if why and self.killed_for is None:
            self.killed_for = why
        if self.init_pidfd is not None:
            # The namespace's pid 1: the kernel kills everything in the namespace and bwrap,
            # which stays alive, reaps it. bwrap itself must not be killed first: its child
            # would be orphaned to the host's PID 1, which reaps lazily, and every such zombie
            # stays charged to the cell's pids cgroup (measured: "Can't fork" after ~70 runs).
            try:
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            self._killpg()  # no bubblewrap, or not started yet: the process group is all there is

    def _killpg(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def reap(self) -> int:
        try:
            code = self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._killpg()  # last resort
            code = self.popen.wait()
        for fd in (self.jobs_w, self.replies_r, self.info_r, self.init_pidfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.jobs_w = self.replies_r = self.info_r = self.init_pidfd = None
        self.popen.stdout.close()
        self.popen.stderr.close()
        return code


class _Protocol(Exception):
    """The untrusted side broke the framing of the reply channel."""
