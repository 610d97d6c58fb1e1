"""The code reward (DESIGN §6): run the response's final code block against the prompt's tests.

Reward 1 only if every case passes; otherwise 0 with ``reason`` the first failing verdict
(``wrong_answer``, ``runtime_error``, ``timeout``, ``memory``, ``output_limit``, ``killed``) or
one of ``no_code`` (no fenced code block), ``unsupported_language``, ``compile_error``,
``bad_reference``, ``no_tests``, ``sandbox_error``. ``parts`` holds the per-case verdicts (the
ones above, or ``not_run`` for cases skipped after a timeout or a failed compile), their counts,
``passed`` / ``total`` and a short ``detail`` of the first failure.

The reference format and the verdict rules are in :mod:`longrl.rewards.sandbox.harness`; the
isolation in :mod:`longrl.rewards.sandbox.executor`. Example (needs bubblewrap)::

    >>> from longrl.rewards import get_scorer
    >>> from longrl.types import Prompt
    >>> p = Prompt(id="add", text="Read a and b, print a+b.", task="code",
    ...            reference={"tests": [{"input": "1 2\\n", "output": "3\\n"}]})
    >>> scorer = get_scorer("code")
    >>> s = scorer([p], ["```python\\na, b = map(int, input().split())\\nprint(a + b)\\n```"])[0]
    >>> (s.value, s.reason, s.parts["verdicts"])
    (1.0, 'ok', ['ok'])
    >>> scorer.close()
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from longrl.errors import UserError
from longrl.rewards.sandbox.executor import Limits, Sandbox, SandboxConfig
from longrl.rewards.sandbox.harness import counts, evaluate, parse_reference
from longrl.rewards.sandbox.server import SandboxClient
from longrl.types import Prompt, Score

_FENCE = re.compile(r"^[ \t]*(`{3,})[ \t]*([^\s`]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
LANG_ALIASES = {"python": "python", "py": "python", "python3": "python", "py3": "python",
                "cpp": "cpp", "c++": "cpp", "cc": "cpp", "cxx": "cpp", "c++17": "cpp", "c++20": "cpp"}
# blocks that show output or shell sessions, not the solution: skipped when looking for the last one
_NOT_CODE = {"text", "txt", "plaintext", "output", "console", "shell", "sh", "bash", "json", "markdown", "md"}


def extract_code(response: str) -> tuple[str | None, str] | None:
    """``(language or None, code)`` of the response's final fenced code block, or None.

    The language is normalised through ``LANG_ALIASES`` (None when the fence names none); an
    unknown name comes back as written, so the caller can report ``unsupported_language``. An
    unterminated final fence (a response cut at the length cap) does not count.
    """
    blocks = [(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(response)]
    blocks = [(tag, code) for tag, code in blocks if tag not in _NOT_CODE]
    if not blocks:
        return None
    tag, code = blocks[-1]
    if not code.strip():
        return None
    return (LANG_ALIASES.get(tag, tag) if tag else None), code


class CodeScorer:
    """Scores code responses in a local sandbox, or on a ``longrl sandbox serve`` host (``url``).

    Options (the ``code`` section of the reward config):

    * ``url`` / ``token``: use a remote sandbox server; checked at construction (a server that
      cannot be reached is a UserError now, not mid-run). The token defaults to the environment
      variable ``LONGRL_SANDBOX_TOKEN``.
    * ``concurrency``: responses scored at once (0 = CPU count); also the local pool's size.
    * ``time_limit`` (wall seconds per case) and ``memory_mb``: defaults for prompts whose
      reference does not set them.
    * ``unsafe_no_isolation``: run without bubblewrap (only for code you trust).
    """

    def __init__(self, url: str | None = None, token: str | None = None, concurrency: int = 0,
                 time_limit: float = 4.0, memory_mb: int = 512, unsafe_no_isolation: bool = False):
        self.workers = concurrency or os.cpu_count() or 1
        if time_limit <= 0 or memory_mb < 16:
            raise UserError("code scorer: time_limit must be > 0 seconds and memory_mb >= 16")
        self.limits = Limits(time_s=float(time_limit), memory_mb=int(memory_mb))
        self.sandbox: Sandbox | None = None
        if url:  # the harness still runs here: the server only runs the untrusted code
            self.backend: Any = SandboxClient(url, token or os.environ.get("LONGRL_SANDBOX_TOKEN"),
                                              limits=self.limits)
        else:
            self.sandbox = Sandbox(SandboxConfig(concurrency=self.workers, limits=self.limits,
                                                 unsafe_no_isolation=unsafe_no_isolation))
            self._self_test()
            self.backend = self.sandbox
        self.languages = self.backend.languages
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="code-reward")

    def _self_test(self) -> None:
        res = self.sandbox.run("print(6 * 7)", "python", b"", Limits(time_s=30.0))
        if res.status != "ok" or res.stdout.strip() != b"42":
            self.sandbox.close()
            raise UserError("the code sandbox failed its self-test (print(6 * 7)): "
                            f"{res.status}, exit {res.exit_code}: {res.stderr.decode('utf-8', 'replace')[-500:]}")

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Score]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return list(self._pool.map(self.score_one, prompts, responses))

    def score_one(self, prompt: Prompt, response: str) -> Score:
        try:
            ref = parse_reference(prompt.reference)
        except ValueError as e:
            return Score(0.0, "bad_reference", {"detail": str(e)})
        found = extract_code(response)
        if found is None:
            return Score(0.0, "no_code", {"verdicts": [], "total": len(ref.tests) if ref.tests else 0})
        lang, code = found
        lang = lang or ref.language
        if lang not in self.languages:
            return Score(0.0, "unsupported_language", {"lang": lang})
        try:
            ev = evaluate(self.backend, code, lang, ref)
        except Exception as e:  # noqa: BLE001 - sandbox boundary: a sandbox or server failure
            # scores this one response 0 with a reason; it never stops training
            return Score(0.0, "sandbox_error", {"detail": f"{type(e).__name__}: {e}"[:500], "lang": lang})
        parts = {"verdicts": ev.verdicts, "counts": counts(ev.verdicts), "lang": lang,
                 "passed": sum(v == "ok" for v in ev.verdicts), "total": len(ev.verdicts)}
        if ev.detail:
            parts["detail"] = ev.detail
        return Score(1.0 if ev.passed else 0.0, ev.reason, parts)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.backend.close()
