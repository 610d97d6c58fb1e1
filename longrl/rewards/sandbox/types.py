"""The local sandbox's public types: its options, the limits of one run, and what a run did."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LANGUAGES = ("python", "cpp")
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"


class SandboxError(RuntimeError):
    """The sandbox itself failed (could not start a process): not a verdict on the code."""


@dataclass
class Limits:
    """Resource limits of one run. ``time_s`` is wall clock; CPU time is capped at ceil(time_s)+1."""

    time_s: float = 4.0  # wall-clock seconds per run (per test case, or per function-call test)
    memory_mb: int = 512  # memory cgroup limit; RLIMIT_AS is 2x this with cgroups, 1x without
    output_bytes: int = 1 << 20  # stdout + stderr captured per run; more is `output_limit`
    fsize_mb: int = 16  # largest file the program may write (RLIMIT_FSIZE)
    nofile: int = 64  # open file descriptors (RLIMIT_NOFILE)
    nproc: int = 16  # processes + threads of the cell's uid (RLIMIT_NPROC; pids.max = this + 4)
    stack_mb: int = 64  # main-thread stack (deep recursion in competitive-programming code)


@dataclass
class RunResult:
    """What one sandboxed run did, as observed from outside.

    ``status`` is ``ok`` (exited with status 0), ``runtime_error`` (non-zero exit),
    ``timeout`` (wall clock or CPU limit), ``memory`` (OOM kill, MemoryError, bad_alloc),
    ``output_limit`` (output cap or file-size limit) or ``killed`` (any other signal).
    """

    status: str
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stdout"] = self.stdout.decode("utf-8", "replace")
        d["stderr"] = self.stderr.decode("utf-8", "replace")
        return d


@dataclass
class SandboxConfig:
    """Options of the local sandbox; every field has a safe default."""

    concurrency: int = 0  # runs at once; 0 = os.cpu_count()
    uid_base: int = 61000  # cells run as the first free uids from here (uids must be unused on the host)
    cgroups: str = "auto"  # "auto": use cgroup v1 pids+memory when writable; "off": rlimits only
    tmpfs_mb: int = 64  # size of the private /tmp (the work dir): "filling the disk" ends here
    unsafe_no_isolation: bool = False  # without bubblewrap run anyway (rlimits + uid only)
    python: str = ""  # interpreter inside the sandbox; "" = this one (resolved, no PATH shims)
    python_packages: list[str] = field(default_factory=list)  # extra importable packages (read-only)
    preload: list[str] = field(default_factory=list)  # modules the warm stub imports ahead of runs
    cxx: str = ""  # C++ compiler; "" = g++ on PATH when present
    limits: Limits = field(default_factory=Limits)  # defaults for runs that do not say
