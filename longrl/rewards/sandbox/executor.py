"""The local sandbox: a pool of warm, isolated, resource-limited processes (DESIGN §6, k1.5 §2.6.4).

Isolation of one run (k1.5 used crun with pre-created cgroups and a tmpfs overlay):

* **bubblewrap** namespaces: own pid namespace (everything the code forks dies with it), no
  network (an empty net namespace: even 127.0.0.1 is a different, empty loopback), own IPC and
  UTS; ``--die-with-parent``; ``--new-session``; an empty environment (the grader's variables
  never enter). The file system is a fresh tmpfs root holding read-only binds of only the
  interpreter's prefix and the system library directory (the compiler's directories too, for a
  C++ compile); no ``/etc``, no ``/home``, no ``/root`` beyond the interpreter. The only
  writable place is a private, size-capped tmpfs ``/tmp``, which is also the working directory.
* **An unprivileged uid per cell** (claimed from ``uid_base`` up with a host-wide lock file, so
  two pools, in one process or two, never share one): the stub drops from root to it before
  it reads a job. RLIMIT_NPROC is per real uid and does nothing for root (NOTES: a fork bomb got
  300 of 300 forks), so one uid per concurrently live process is what makes it bite.
* **cgroups v1** per cell when writable (pids.max, memory.limit_in_bytes; an OOM kill is read
  back from ``memory.oom_control``). RLIMIT_AS stays as a backstop only (NOTES: 1 GiB of
  RLIMIT_AS allows ~14 Python threads), with ``MALLOC_ARENA_MAX=2``.
* **rlimits**: CPU seconds (SIGXCPU, then SIGKILL a second later), address space, file size
  (SIGXFSZ), open files, processes, no core dumps.
* **Wall clock and output cap** enforced by the parent: on expiry or overflow it SIGKILLs the
  namespace's pid 1 through a pidfd (no pid-reuse race), which takes every process in the
  namespace with it, then reaps bwrap.
* **No orphans** (NOTES: the host's PID 1 reaps lazily and zombies piled up until bwrap could not
  fork): the stub runs as the namespace's pid 1 (``--as-pid-1``), so bwrap itself reaps it. With
  bwrap's own init in between, bwrap exits on the init's exit report without reaping it; the
  orphaned init then sat as a zombie of the host's PID 1, still charged to the cell's pids
  cgroup, and after a few hundred runs the next start failed with "Can't fork for pid 1".

Warm workers: each cell keeps one process started ahead of need (bwrap + ``python -I -S`` + the
stub, privileges already dropped, blocked reading its job channel). A run costs sending the job
and the run itself; a fresh process for the cell's next job starts as soon as the run ends. Each
caller thread owns one cell at a time; there are ``2 * concurrency`` cells so that a warm spare is
ready while the other one restarts.
"""

from __future__ import annotations

import json
import marshal
import math
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longrl.errors import UserError
from longrl.rewards.sandbox._procs import _Cgroup, _cgroup_parents, _Proc, _Protocol
from longrl.rewards.sandbox.types import (
    INSTALL_HINT,
    LANGUAGES,
    Limits,
    RunResult,
    SandboxConfig,
    SandboxError,
)

if TYPE_CHECKING:
    from longrl.rewards.sandbox.rpc import RpcSession

_HERE = Path(__file__).resolve().parent
STUB_SOURCE = (_HERE / "_codec.py").read_text() + "\n" + (_HERE / "_stub.py").read_text()
# The stub as this interpreter's bytecode: compiling its source costs every start ~2.4 ms.
# Used only when the sandbox runs this very interpreter (marshal is version-specific).
_STUB_LOADER = "import marshal,sys;exec(marshal.loads(bytes.fromhex(sys.argv.pop(1))))"
_STUB_CODE_HEX = marshal.dumps(compile(STUB_SOURCE, "<longrl-sandbox-stub>", "exec")).hex()


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _world_readable(path: str) -> bool:
    """Whether an unprivileged uid can reach and read ``path`` (o+x on every ancestor, o+r on it)."""
    p = Path(path)
    return all(os.stat(a).st_mode & 0o001 for a in p.parents) and bool(os.stat(p).st_mode & 0o004)


def _claim_uids(base: int, count: int) -> list[tuple[int, int]]:
    """``count`` uids from ``base`` up that no other live pool holds: ``(uid, lock fd)`` each.

    One ``flock`` per uid in a root-owned directory; the kernel drops the lock when the holder
    dies, so a crashed trainer never leaves uids claimed."""
    import fcntl

    lock_dir = Path("/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()) / "longrl-sandbox-uids"
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    out: list[tuple[int, int]] = []
    uid = base
    while len(out) < count:
        if uid >= base + 65536:
            raise SandboxError(f"no free sandbox uids in [{base}, {base + 65536})")
        fd = os.open(lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            out.append((uid, fd))
        except BlockingIOError:
            os.close(fd)
        uid += 1
    return out


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


class _Cell:
    """A uid (and cgroups) that holds at most one sandbox process at a time."""

    def __init__(self, index: int, uid: int | None, cgroup: _Cgroup | None):
        self.index, self.uid, self.cgroup = index, uid, cgroup
        self.proc: _Proc | None = None
        self.flavor = ""
        self.hostdir: str | None = None  # work dir when running without bubblewrap


class Sandbox:
    """Runs untrusted Python / C++ in warm, isolated processes. Thread-safe; ``close()`` when done.

    >>> sb = Sandbox()                                             # doctest: +SKIP
    >>> sb.run("print(input()[::-1])", "python", stdin=b"abc\\n").stdout   # doctest: +SKIP
    b'cba\\n'
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any):
        cfg = config or SandboxConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise UserError(f"unknown sandbox option {k!r}; choose from {sorted(asdict(cfg))}")
            setattr(cfg, k, v)
        self.cfg = cfg
        self.bwrap = bwrap_path()
        if self.bwrap is None and not cfg.unsafe_no_isolation:
            raise UserError(
                "bubblewrap (bwrap) is not installed, and longrl will not run untrusted code without "
                f"isolation: {INSTALL_HINT}, or pass --unsafe-no-isolation (unsafe_no_isolation=True) "
                "only for code you trust"
            )
        self.isolation = "bwrap" if self.bwrap else "none"
        self.python = os.path.realpath(cfg.python or sys.executable)
        same = self.python == os.path.realpath(sys.executable)
        self._stub_args = [_STUB_LOADER, _STUB_CODE_HEX] if same else [STUB_SOURCE]
        self.prefix = os.path.realpath(sys.base_prefix) if not cfg.python else str(Path(self.python).parents[1])
        cxx = cfg.cxx or shutil.which("g++") or ""
        self.cxx = os.path.realpath(cxx) if cxx else ""
        self.languages = ["python"] + (["cpp"] if self.cxx else [])
        self._pkg_binds = self._package_binds(cfg.python_packages)
        self._cmd_cache: dict[str, list[str]] = {}
        self.as_root = os.geteuid() == 0
        n = cfg.concurrency or os.cpu_count() or 1
        self._tag = f"longrl-sandbox-{os.getpid()}-{secrets.token_hex(3)}"
        parents = _cgroup_parents(self._tag) if cfg.cgroups == "auto" and self.as_root else None
        self._cg_parents = parents
        self.cells: list[_Cell] = []
        # Without bubblewrap the interpreter is used where it lies; if other users cannot read it
        # (pyenv under /root is 0700), the uid drop would break every import, so it is skipped and
        # only the pids cgroup bounds processes (a weaker setup, as the option's name says).
        drop = self.as_root and (self.bwrap is not None or _world_readable(self.prefix))
        self._uid_locks = _claim_uids(cfg.uid_base, 2 * n) if drop else []
        for i in range(2 * n):
            cg = _Cgroup.create(parents, f"cell{i}") if parents else None
            self.cells.append(_Cell(i, self._uid_locks[i][0] if drop else None, cg))
        self._free: queue.Queue[_Cell] = queue.Queue()
        for c in self.cells:
            self._free.put(c)
        self._closed = False
        self._lock = threading.Lock()
        # Every sandbox process is started from this one long-lived thread. bwrap's
        # --die-with-parent uses PR_SET_PDEATHSIG, which fires when the *thread* that forked it
        # exits: processes started from a caller's short-lived worker thread were SIGKILLed
        # (and misread as "killed" verdicts) as soon as that thread pool shut down.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="sandbox-spawner")
        for c in self.cells:  # warm the whole pool now: start-up costs are paid before the first run
            self._spawn_now(c, "run")

    # ------------------------------------------------------------------ public API
    def run(self, code: str, lang: str = "python", stdin: bytes | str = b"", limits: Limits | None = None) -> RunResult:
        """Compile if needed and run one program once. A failed compile is a ``runtime_error``."""
        prog = self.prepare(code, lang, limits)
        if isinstance(prog, RunResult):
            return prog
        return self.execute(prog, stdin, limits)

    def prepare(self, code: str, lang: str, limits: Limits | None = None) -> Program | RunResult:
        """A runnable :class:`Program`, or the failed compile's :class:`RunResult`."""
        check_language(lang, self.languages)
        if lang == "python":
            return Program("python", code.encode())
        lim = _compile_limits(limits or self.cfg.limits)
        argv = [self.cxx, "-O2", "-std=gnu++17", "-pipe", "-o", "prog", "main.cpp"]
        res, binary = self._job("compile", {"main.cpp": 0o600}, [code.encode()], b"", lim, argv=argv,
                                collect="prog", flavor="compile")
        if binary is None:
            res.status = "runtime_error" if res.status == "ok" else res.status
            return res
        return Program("cpp", binary)

    def execute(self, program: Program, stdin: bytes | str = b"", limits: Limits | None = None) -> RunResult:
        lim = limits or self.cfg.limits
        stdin = stdin.encode() if isinstance(stdin, str) else stdin
        if program.lang == "python":
            res, _ = self._job("python", {"main.py": 0o600}, [program.payload], stdin, lim,
                               code=program.payload.decode("utf-8", "replace"))
        else:
            res, _ = self._job("exec", {"prog": 0o700}, [program.payload], stdin, lim, argv=["./prog"])
        return res

    @property
    def default_limits(self) -> Limits:
        return self.cfg.limits

    def run_batch(self, code: str, lang: str, inputs: list[str], limits: Limits | None = None
                  ) -> tuple[RunResult | None, list[RunResult | None]]:
        """Compile once and run once per input: ``(failed compile or None, results)``. After a
        timeout the remaining inputs are not run (None): each would cost the full time limit."""
        prog = self.prepare(code, lang, limits)
        if isinstance(prog, RunResult):
            return prog, [None] * len(inputs)
        out: list[RunResult | None] = []
        for inp in inputs:
            out.append(None if any(r is not None and r.status == "timeout" for r in out)
                       else self.execute(prog, inp, limits))
        return None, out

    def session(self, code: str, limits: Limits | None = None) -> RpcSession:
        """Load Python ``code`` in a fresh sandbox process and call its functions (see RpcSession)."""
        from longrl.rewards.sandbox.rpc import RpcSession

        return RpcSession(self, code, limits or self.cfg.limits)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._spawner.shutdown(wait=True)
        for c in self.cells:
            if c.proc is not None:
                if c.proc.jobs_w is not None:
                    os.close(c.proc.jobs_w)  # EOF: a warm stub exits on its own
                    c.proc.jobs_w = None
                c.proc.kill()
                c.proc.reap()
                c.proc = None
            self._cleanup_cell(c)
            if c.cgroup:
                c.cgroup.remove()
        for _, fd in self._uid_locks:
            os.close(fd)  # releases the uid's lock
        self._uid_locks = []
        if self._cg_parents:
            for d in self._cg_parents.values():
                try:
                    d.rmdir()
                except OSError:
                    pass

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: modules may already be gone
            pass

    # ------------------------------------------------------------------ cells and processes
    def _acquire(self, flavor: str) -> _Cell:
        if self._closed:
            raise SandboxError("sandbox is closed")
        cell = self._free.get()
        try:
            if cell.proc is None or cell.flavor != flavor or cell.proc.popen.poll() is not None:
                self._retire(cell)
                self._spawn_now(cell, flavor)
            if not self._wait_ready(cell):  # a warm process that died: one fresh try
                self._retire(cell)
                self._spawn_now(cell, flavor)
                if not self._wait_ready(cell):
                    err = cell.proc.buf["err"].decode("utf-8", "replace")[-2000:] if cell.proc else ""
                    self._retire(cell)
                    raise SandboxError(f"sandbox process failed to start:\n{err}")
        except BaseException:
            self._free.put(cell)
            raise
        return cell

    def _release(self, cell: _Cell) -> None:
        def respawn() -> None:
            # Reap the finished process (its namespace teardown takes a few ms) and start the
            # cell's next one: both off the caller's path.
            self._retire(cell)
            if not self._closed:
                try:
                    self._spawn(cell, "run")
                except OSError:
                    cell.proc = None  # _acquire tries again and reports the error
            self._free.put(cell)

        try:
            self._spawner.submit(respawn)
        except RuntimeError:  # closed meanwhile
            self._retire(cell)
            self._free.put(cell)

    def _spawn_now(self, cell: _Cell, flavor: str) -> None:
        self._spawner.submit(self._spawn, cell, flavor).result()

    def _retire(self, cell: _Cell) -> None:
        if cell.proc is not None:
            cell.proc.kill()
            cell.proc.reap()
            cell.proc = None
        self._cleanup_cell(cell)

    def _cleanup_cell(self, cell: _Cell) -> None:
        if cell.cgroup:
            cell.cgroup.kill_all()
        if cell.hostdir:
            shutil.rmtree(cell.hostdir, ignore_errors=True)
            cell.hostdir = None

    def _wait_ready(self, cell: _Cell) -> bool:
        proc = cell.proc
        if proc.ready:
            return True
        frame = proc.pump(time.monotonic() + 30, 1 << 20, want_frame=True)
        if not frame or not frame.get("ready"):
            return False
        proc.ready = True
        if proc.info_r is not None:
            # bwrap's --info-fd names the host pid of the namespace's pid 1, the stub. It
            # answered READY, so it is alive now: the pidfd cannot point at a recycled pid.
            info = b""
            while not info.rstrip().endswith(b"}"):
                chunk = os.read(proc.info_r, 4096)
                if not chunk:
                    break
                info += chunk
            child = json.loads(info)["child-pid"]
            proc.init_pidfd = os.pidfd_open(child)
        else:
            child = proc.popen.pid
        if cell.cgroup:
            # Join the cell's cgroups now: bwrap (no init of its own with --as-pid-1) and the
            # stub are the only processes, and the stub forks nothing before its job arrives.
            # (Cheaper than a `sh -c 'echo $$ > cgroup.procs; exec bwrap'` wrapper per run.)
            cell.cgroup.set_limits(self.cfg.limits)
            cell.cgroup.join({proc.popen.pid, child})
        return True

    def _spawn(self, cell: _Cell, flavor: str) -> None:
        jobs_r, jobs_w = os.pipe()
        rep_r, rep_w = os.pipe()
        info_r = info_w = None
        cfg = {"rfd": jobs_r, "wfd": rep_w, "uid": cell.uid, "workdir": "/tmp", "preload": self.cfg.preload,
               "pythonpath": ["/opt/longrl-py"] if self._pkg_binds else []}
        if self.bwrap:
            info_r, info_w = os.pipe()
            cmd = self._bwrap_cmd(flavor, info_w) + [self.python, "-I", "-S", "-c", *self._stub_args, marshal.dumps(cfg).hex()]
            cwd = "/"
        else:
            cell.hostdir = tempfile.mkdtemp(prefix="longrl-unsafe-")
            if cell.uid is not None:
                os.chown(cell.hostdir, cell.uid, cell.uid)
            cfg["workdir"] = cell.hostdir
            cfg["pythonpath"] = sorted({str(Path(s).parent) for s, _ in self._pkg_binds})
            cmd = [self.python, "-I", "-S", "-c", *self._stub_args, marshal.dumps(cfg).hex()]
            cwd = cell.hostdir
        keep = [jobs_r, rep_w] + ([info_w] if info_w is not None else [])
        try:
            popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     pass_fds=keep, start_new_session=True, cwd=cwd, env=self._env(cell))
        finally:
            for fd in keep:
                os.close(fd)
        cell.proc = _Proc(popen, jobs_w, rep_r, info_r)
        cell.flavor = flavor

    def _env(self, cell: _Cell) -> dict[str, str]:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "MALLOC_ARENA_MAX": "2",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
        env["HOME"] = env["TMPDIR"] = cell.hostdir or "/tmp"
        return env

    def _bwrap_cmd(self, flavor: str, info_fd: int) -> list[str]:
        if flavor not in self._cmd_cache:
            self._cmd_cache[flavor] = self._build_bwrap_cmd(flavor)
        return [self.bwrap, "--info-fd", str(info_fd)] + self._cmd_cache[flavor]

    def _build_bwrap_cmd(self, flavor: str) -> list[str]:
        # The environment is the one Popen hands bwrap (``_env``): the grader's never enters.
        cmd = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
               "--unshare-cgroup-try", "--as-pid-1", "--die-with-parent", "--new-session"]
        if self.as_root:  # unprivileged bwrap runs in a user namespace with no capabilities anyway
            cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # to drop uid
        binds = [self.prefix]
        multiarch = sysconfig.get_config_var("MULTIARCH") or ""
        for d in (f"/usr/lib/{multiarch}" if multiarch else "", "/usr/lib64", "/lib64", f"/lib/{multiarch}"):
            if d and os.path.exists(d) and not os.path.islink(d) and not os.path.islink(str(Path(d).parent)):
                binds.append(d)
        if flavor == "compile":
            binds += [d for d in ("/usr/bin", "/usr/lib/gcc", "/usr/libexec/gcc", "/usr/include",
                                  "/usr/local/include") if os.path.isdir(d)]
        made: set[str] = set()
        for src in binds + [dst for _, dst in self._pkg_binds]:
            for a in _ancestors(src):
                if a not in made and not os.path.islink(a):
                    cmd += ["--perms", "0755", "--dir", a]  # bwrap would create them 0700
                    made.add(a)
        for src in binds:
            cmd += ["--ro-bind", src, src]
        purelib = os.path.realpath(sysconfig.get_paths()["purelib"])
        if purelib.startswith(self.prefix + "/") and os.path.isdir(purelib):
            # hide the host's installed packages (torch, the grader's own code, ...): only the
            # standard library and the packages asked for below are visible
            cmd += ["--size", "65536", "--perms", "0555", "--tmpfs", purelib]
        for src, dst in self._pkg_binds:
            cmd += ["--ro-bind", src, dst]
        for link in ("/lib", "/lib64", "/bin"):  # merged-/usr systems: keep the loader's paths valid
            if os.path.islink(link):
                cmd += ["--symlink", os.readlink(link), link]
        # A minimal /dev: four device binds instead of bwrap's --dev (a tmpfs, ~8 binds and a
        # devpts mount; measured ~1 ms more per start). No tty, no /dev/shm.
        cmd += ["--perms", "0755", "--dir", "/dev"]
        for node in ("null", "zero", "urandom", "random"):
            cmd += ["--dev-bind", f"/dev/{node}", f"/dev/{node}"]
        for i, name in enumerate(("stdin", "stdout", "stderr")):
            cmd += ["--symlink", f"/proc/self/fd/{i}", f"/dev/{name}"]
        cmd += ["--symlink", "/proc/self/fd", "/dev/fd", "--proc", "/proc",
                "--size", str(self.cfg.tmpfs_mb << 20), "--perms", "1777", "--tmpfs", "/tmp",
                "--chdir", "/tmp"]
        return cmd

    def _package_binds(self, names: list[str]) -> list[tuple[str, str]]:
        from importlib.machinery import PathFinder  # searches sys.path, ignores sys.modules

        out = []
        for name in names:
            spec = PathFinder.find_spec(name)
            if spec is None or spec.origin is None and not spec.submodule_search_locations:
                raise UserError(f"sandbox python_packages: {name!r} is not installed here")
            src = list(spec.submodule_search_locations)[0] if spec.submodule_search_locations else spec.origin
            out.append((os.path.realpath(src), f"/opt/longrl-py/{os.path.basename(src)}"))
        return out

    # ------------------------------------------------------------------ one job
    def _job(self, kind: str, files: dict[str, int], contents: list[bytes], stdin: bytes, lim: Limits,
             *, code: str | None = None, argv: list[str] | None = None, collect: str | None = None,
             flavor: str = "run") -> tuple[RunResult, bytes | None]:
        cell = self._acquire(flavor)
        try:
            return self._run_on(cell, kind, files, contents, stdin, lim, code=code, argv=argv, collect=collect)
        finally:
            self._release(cell)

    def _job_head(self, cell: _Cell, kind: str, files: dict[str, int], contents: list[bytes], lim: Limits,
                  cpu_s: int | None = None, **extra: Any) -> dict[str, Any]:
        """Set the cell's cgroup limits for this job and build the job message (with the rlimits
        the stub sets on itself before it becomes the job; ``prlimit`` from here is refused for
        another uid's process on this kernel, even as root)."""
        if cell.cgroup:
            cell.cgroup.set_limits(lim)
        mem = lim.memory_mb << 20
        head = {"kind": kind, "files": files, "sizes": {n: len(c) for n, c in zip(files, contents)},
                "limits": {"cpu_s": cpu_s or int(math.ceil(lim.time_s)) + 1, "fsize": lim.fsize_mb << 20,
                           "nofile": lim.nofile, "nproc": lim.nproc if cell.uid is not None else 0,
                           "as_bytes": 2 * mem if cell.cgroup else mem, "stack": lim.stack_mb << 20}}
        head.update({k: v for k, v in extra.items() if v is not None})
        return head

    def _run_on(self, cell: _Cell, kind: str, files: dict[str, int], contents: list[bytes], stdin: bytes,
                lim: Limits, *, code: str | None = None, argv: list[str] | None = None,
                collect: str | None = None) -> tuple[RunResult, bytes | None]:
        proc = cell.proc
        oom0 = cell.cgroup.oom_kills() if cell.cgroup else 0
        head = self._job_head(cell, kind, files, contents, lim, code=code, argv=argv, collect=collect)
        t0 = time.monotonic()
        try:
            proc.send(head, b"".join(contents) + stdin)
        except BrokenPipeError:
            pass  # the process died already: the verdict below says how
        deadline = t0 + lim.time_s
        frame = None
        try:
            frame = proc.pump(deadline, lim.output_bytes, want_frame=True)
            if frame is not None and kind != "compile" and type(frame.get("exit")) is int:
                # pid 1's report of the job's exit status: answer now; _release reaps the rest
                proc.drain(lim.output_bytes)
                if not proc.overflow:
                    oom = cell.cgroup is not None and cell.cgroup.oom_kills() > oom0
                    err = bytes(proc.buf["err"])
                    return RunResult(_status(frame["exit"], None, oom, err), frame["exit"], bytes(proc.buf["out"]),
                                     err[-8192:], time.monotonic() - t0), None
            elif frame is not None:  # the compile's result: drain what is left until the pipes close
                proc.pump(deadline, lim.output_bytes, want_frame=False)
        except (_Protocol, ValueError):
            proc.overflow = True
        if proc.overflow:
            proc.kill("output_limit")
        elif any(proc.open.values()) and time.monotonic() >= deadline:
            proc.kill("timeout")
        else:
            try:  # pipes closed: the process is exiting; give it a moment to be reaped
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()) + 0.5)
            except subprocess.TimeoutExpired:
                proc.kill("timeout")
        code_ = proc.reap()
        wall = time.monotonic() - t0
        cell.proc = None
        oom = cell.cgroup is not None and cell.cgroup.oom_kills() > oom0
        status = _status(code_, proc.killed_for, oom, bytes(proc.buf["err"]))
        res = RunResult(status, code_, bytes(proc.buf["out"]), bytes(proc.buf["err"][-8192:]), wall)
        binary = None
        if kind == "compile" and frame is not None and frame.get("compiled") == 0 and frame["_payload"]:
            binary = frame["_payload"]
        return res, binary


def _status(code: int, killed_for: str | None, oom: bool, stderr: bytes) -> str:
    """The verdict on one run, from what the parent saw. bwrap exits 128+N when its command died
    of signal N, so exit codes above 128 are read as signals (a program can fake one only to get
    another failing verdict)."""
    if killed_for:
        return killed_for
    if oom:
        return "memory"
    if code == 0:
        return "ok"
    sig = code - 128 if code > 128 else (-code if code < 0 else 0)
    tail = stderr[-4096:]
    if sig == signal.SIGXCPU:
        return "timeout"
    if sig == signal.SIGXFSZ:
        return "output_limit"
    if (sig and b"bad_alloc" in tail) or (not sig and b"MemoryError" in tail):
        return "memory"
    return "killed" if sig else "runtime_error"


def _compile_limits(lim: Limits) -> Limits:
    """g++ needs more than a run: ~10 s, ~1 GiB and a handful of processes (cc1plus, as, ld)."""
    return Limits(time_s=max(lim.time_s, 20.0), memory_mb=max(lim.memory_mb, 1024), output_bytes=1 << 20,
                  fsize_mb=64, nofile=max(lim.nofile, 128), nproc=max(lim.nproc, 32), stack_mb=lim.stack_mb)


def check_language(lang: str, available: list[str] | tuple[str, ...] = LANGUAGES) -> str:
    if lang not in LANGUAGES:
        raise UserError(f"unknown language {lang!r}; choose from {list(LANGUAGES)}")
    if lang not in available:
        raise UserError(f"language {lang!r} needs a compiler that is not installed here (g++ for cpp)")
    return lang


@dataclass
class Program:
    """A runnable program: Python source, or a compiled binary (``lang="cpp"``)."""

    lang: str
    payload: bytes
