"""Records that flow between the stages of longrl (DESIGN §8).

Each field says who creates it and who reads it. Records are plain dataclasses: cheap to build,
easy to serialise into a checkpoint (``dataclasses.asdict``), and typed so a reader knows what
is in them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

StopReason = Literal["eos", "max_length", "repetition", "budget"]


@dataclass
class Prompt:
    """One problem to solve.

    Created by a task generator (``longrl.tasks``) or a prompt-file loader (``longrl.data``);
    read by the sampler (``difficulty``), the rollout (``text``) and the scorer (``reference``,
    picked by ``task``).
    """

    id: str  # unique within a data source; the sampler's per-prompt statistics key on it
    text: str  # the prompt as the model sees it (already rendered, chat template applied)
    reference: Any  # the answer / test cases the scorer compares with; never shown to the model
    task: str  # name of the scorer in the reward registry (``longrl.rewards.get_scorer``)
    difficulty: float = 0.0  # in [0, 1]: level L of n maps to (L-1)/(n-1); curation: 1 - pass rate
    level: int | None = None  # the integer difficulty label, when the data has one
    pass_rate: float | None = None  # curation's pass rate in [0, 1]: the sampler's initial success rate
    tags: dict[str, Any] = field(default_factory=dict)  # free-form metadata (source, split, ...)
    # The prompt as chat messages ([{"role", "content"}, ...]) when the source stored it so (verl's
    # schema, chat-format datasets); rendered with the model's chat template. ``text`` then holds
    # the last user message, for display, dedup and judges.
    messages: list[dict[str, str]] | None = None
    # The source row's other columns (verl's extra_info, dataset fields), for reward functions.
    extra: dict[str, Any] = field(default_factory=dict)
    # The prompt's images as encoded files (PNG/JPEG/... bytes, validated as decodable by the
    # loader), in the order of the prompt's image placeholders: one ``<image>`` per image in
    # ``text`` / ``messages``, or HF-style ``{"type": "image"}`` parts in a message's content
    # list. Created by the prompt loaders (``longrl.data``) and visual tasks; turned into ids and
    # pixel inputs by ``longrl.models.vision.encode_prompt_mm``. None: a text-only prompt.
    images: list[bytes] | None = None


@dataclass
class Score:
    """What a scorer returns for one response (DESIGN §6).

    ``value`` is the reward, ``reason`` a short code counted in the metrics (``ok``, ``wrong``,
    ``no_answer``, ``timeout``, ...), ``parts`` details such as per-test verdicts.
    """

    value: float
    reason: str
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        """A response counts as correct when it earned the full task reward."""
        return self.value >= 1.0


@dataclass(frozen=True)
class SamplingParams:
    """How a rollout engine samples. Created by the trainer, evaluator or judge; read by the engines."""

    temperature: float = 1.0  # 0 means greedy (log-probs then come from the raw logits)
    top_p: float = 1.0  # nucleus mass kept; 1.0 keeps the full distribution
    repeat_max_period: int = 0  # stop a sample whose last repeat_window tokens repeat a <=N-gram; 0: off
    repeat_window: int = 64


@dataclass
class GenRequest:
    """One sequence to generate. Created by the trainer / evaluator, read by a rollout engine.

    ``prompt_ids`` is the full context: for a partial rollout it is the prompt followed by the
    response tokens generated so far, and ``max_new_tokens`` is what is left of this iteration's
    budget. ``seed`` makes the sample reproducible independently of batching; with
    ``response_offset`` (how many of ``prompt_ids`` are earlier response tokens) a continued
    trajectory draws the same noise an uninterrupted one would have.
    """

    prompt_ids: list[int]
    max_new_tokens: int
    seed: int | None = None
    response_offset: int = 0  # response tokens already at the end of prompt_ids (partial rollouts)
    # The processor's pixel inputs for an image prompt (``longrl.models.vision.Encoded.mm``): CPU
    # tensors, each stacked along dim 0 over the prompt's images (LLaVA: ``pixel_values``
    # [n_img, 3, H, W]; Qwen2-VL: ``pixel_values`` [sum_patches, D] and ``image_grid_thw``
    # [n_img, 3]); a batch combines rows with ``torch.cat`` along dim 0 in row order. None: text only.
    mm: dict[str, torch.Tensor] | None = None
    # The prompt's encoded image files (``Prompt.images``), set with ``mm``: the ``vllm`` engine sends
    # them (it makes its own pixel inputs); the ``hf`` engine ignores them.
    images: list[bytes] | None = None


@dataclass
class GenResult:
    """What a rollout engine returns for one request.

    ``logprobs[t]`` is log p(token_ids[t]) under the sampling distribution (logits / temperature,
    after top-p renormalisation when top-p < 1), the same quantity the loss uses.
    """

    token_ids: list[int]  # the new tokens, EOS included when the stop reason is "eos"
    logprobs: list[float]
    stop_reason: StopReason


@dataclass
class Trajectory:
    """One sampled response to a prompt, with everything the update needs.

    Created by the trainer from a ``GenResult``; ``reward``/``score`` are filled by the scorer,
    ``advantage`` by the baseline; read by ``longrl.train.batch`` to build the ``TrainBatch``.
    """

    prompt_id: str
    group_id: int  # index of the prompt group within the iteration
    sample_index: int  # j in 0..k-1 within the group
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]  # recorded by the engine at generation time
    versions: list[int]  # per response token: the policy iteration that generated it
    stop_reason: StopReason
    seed: int | None = None  # the sample's noise seed, kept so a partial rollout continues the same sample
    response_text: str = ""
    score: Score | None = None
    len_reward: float = 0.0  # length-penalty part of the reward (DESIGN §3)
    reward: float = 0.0  # combined reward used by the baseline
    advantage: float = 0.0  # reward - group mean (DESIGN §2 step 4)

    @property
    def num_tokens(self) -> int:
        return len(self.response_ids)
