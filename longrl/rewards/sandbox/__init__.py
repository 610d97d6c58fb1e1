"""The code-execution sandbox (DESIGN §6, k1.5 §2.6.4): isolated, limited, warm, also over HTTP.

* :mod:`.executor` — :class:`Sandbox`: warm bubblewrap processes, one uid and cgroup per cell,
  rlimits, wall clock, output cap (its process plumbing and cgroups in :mod:`._procs`; its options,
  limits and results in :mod:`.types`).
* :mod:`.rpc` — :class:`RpcSession`: function calls into a sandboxed program, for assert-style tests.
* :mod:`.harness` — runs test cases (stdin/stdout pairs or assert-style tests) and decides every
  verdict in the trusted parent.
* :mod:`.server` — ``longrl sandbox serve`` and :class:`SandboxClient` for remote reward workers.
* :mod:`.cli` — the ``longrl sandbox`` verb (``run``, ``serve``, ``testgen``).

This package is the one place in longrl that catches broad exceptions: everything behind this
boundary is produced by untrusted code, and no byte it prints may crash the trainer.
"""

from longrl.rewards.sandbox.executor import (
    LANGUAGES,
    Limits,
    Program,
    RunResult,
    Sandbox,
    SandboxConfig,
    SandboxError,
)
from longrl.rewards.sandbox.rpc import CallFailed, RpcSession

__all__ = ["LANGUAGES", "CallFailed", "Limits", "Program", "RpcSession", "RunResult", "Sandbox", "SandboxConfig",
           "SandboxError"]
