"""Options of the built-in scorers and of a reward term: the ``rewards`` section's parts (DESIGN §6).

They are composed into :class:`longrl.config.RewardsConfig`, and read by
:func:`longrl.rewards.compose.build_router`. This module imports nothing heavy: loading a config
must stay fast. :func:`check_source` is how the config refuses a reward source that cannot work.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from longrl.errors import UserError
from longrl.rewards import scorer_names


@dataclass
class JudgeConfig:
    """The math scorer's chain-of-thought judge (k1.5 §2.3.2, longrl/rewards/judge.py): a local model or an endpoint."""

    path: str | None = None  # local model folder, served by a rollout engine in each scoring process
    engine: str = "hf"  # rollout engine for path: hf or vllm
    dtype: str = "float32"  # path's weights: float32 or bfloat16
    base_url: str | None = None  # instead of path: an OpenAI-compatible endpoint, e.g. http://host:8000/v1
    model: str | None = None  # base_url's model name (None: the first it lists)
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding base_url's API key
    max_tokens: int = 2048  # judge tokens per verdict (a verdict cut off here is a judge_error)
    temperature: float = 0.0  # judge sampling temperature; 0: greedy
    request_timeout: float = 120.0  # seconds per base_url request
    concurrency: int = 8  # base_url requests in flight
    retries: int = 1  # asks again after output without a readable verdict

    def validate(self, where: str) -> None:
        if self.path is not None and self.base_url is not None:
            raise UserError(f"{where}.path and {where}.base_url: give one judge, not both")
        if self.path is not None and not (Path(self.path) / "config.json").is_file():
            raise UserError(f"{where}.path: {self.path} is not a Hugging Face model folder (no config.json)")
        if self.engine not in ("hf", "vllm") or self.dtype not in ("float32", "bfloat16"):
            raise UserError(f"{where}.engine must be hf or vllm and {where}.dtype float32 or bfloat16")
        if self.max_tokens < 1 or self.temperature < 0 or self.request_timeout <= 0 or self.concurrency < 1 \
                or self.retries < 0:
            raise UserError(f"{where}: max_tokens >= 1, temperature >= 0, request_timeout > 0, concurrency >= 1 "
                            "and retries >= 0")


@dataclass
class MathRewardConfig:
    """Options of the math scorer (longrl/rewards/math.py)."""

    policy: str = "rule"  # rule: math-verify; judge: the CoT judge only; rule_then_judge: the judge reads what
    # the rule cannot (no_answer, parse_error, bad_reference)
    timeout: float = 5.0  # seconds per math-verify check; its worker is killed after
    workers: int | None = None  # math-verify processes (None: min(2, CPU count))
    memory_mb: int | None = 4096  # address space a math-verify worker may add, MiB (None: no cap)
    max_answer_chars: int = 256  # guard: a longer final answer scores 0 (too_long)
    reject_hedged: bool = True  # guard: several values for a single-valued reference score 0 (hedged)
    reject_code_block: bool = True  # guard: an answer found only inside a code block scores 0 (in_code_block)
    reject_prompt_echo: bool = True  # guard: an answer found only in a copy of the prompt scores 0 (prompt_echo)
    judge: JudgeConfig = field(default_factory=JudgeConfig)

    def validate(self) -> None:
        if self.policy not in ("rule", "judge", "rule_then_judge"):
            raise UserError(f"rewards.math.policy: {self.policy!r}; choose rule, judge or rule_then_judge")
        if self.policy != "rule" and self.judge.path is None and self.judge.base_url is None:
            raise UserError(f"rewards.math.policy={self.policy} needs a judge: set rewards.math.judge.path (a model "
                            "folder) or rewards.math.judge.base_url (an OpenAI-compatible endpoint)")
        if self.timeout <= 0 or self.max_answer_chars < 1 or (self.workers is not None and self.workers < 1):
            raise UserError("rewards.math: timeout > 0, max_answer_chars >= 1 and workers >= 1 (or null)")
        self.judge.validate("rewards.math.judge")


@dataclass
class CodeRewardConfig:
    """Options of the code scorer (longrl/rewards/code.py) and its sandbox."""

    time_limit: float = 4.0  # wall seconds per test case, where a prompt's reference sets none
    memory_mb: int = 512  # MiB per test case, where a prompt's reference sets none
    workers: int = 0  # warm sandbox workers, i.e. responses run at once (0: CPU count)
    url: str | None = None  # a remote `longrl sandbox serve` host instead of the local sandbox
    token_env: str = "LONGRL_SANDBOX_TOKEN"  # environment variable holding that host's token

    def validate(self) -> None:
        if self.time_limit <= 0 or self.memory_mb < 16 or self.workers < 0:
            raise UserError("rewards.code: time_limit > 0 seconds, memory_mb >= 16 and workers >= 0")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise UserError(f"rewards.code.url: {self.url!r} is not an http(s) URL")


@dataclass
class RewardTermConfig:
    """One extra reward term of a task: ``weight`` times what ``fn`` scores."""

    fn: str = ""  # module:function, path/to/file.py:function, an http(s) reward endpoint or a scorer name
    weight: float = 1.0  # multiplies the term's value before it is added to the task reward


# ----------------------------------------------------------------------------- sources

RESERVED_TERMS = ("task", "length")  # term names the metrics use for the task reward and the length penalty


def source_kind(text: str) -> str:
    """``url``, ``function`` (``module:function`` / ``file.py:function``) or ``scorer`` (a name)."""
    if text.startswith(("http://", "https://")):
        return "url"
    return "function" if ":" in text else "scorer"


def has_scorer(name: str) -> bool:
    return name in scorer_names()


def check_source(text: str, where: str, base_dir: str | Path | None = None) -> None:
    """Refuse a source that cannot work, naming ``where``: no such module, file, function or scorer,
    a signature none of the accepted forms fit, a URL without a host."""
    kind = source_kind(text)
    if kind == "url":
        if not urllib.parse.urlsplit(text).hostname:
            raise UserError(f"{where}: {text!r} is not a URL with a host")
    elif kind == "function":
        from longrl.rewards.custom import check_function

        check_function(text, where, base_dir)
    elif not has_scorer(text):
        raise UserError(f"{where}: {text!r} is neither a scorer ({', '.join(scorer_names())}) nor "
                        "module:function, path/to/file.py:function or an http(s) URL")
