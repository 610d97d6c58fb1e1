"""Typed run configuration: YAML presets + dotted ``--set`` overrides, validated at load time.

Each component defines its own dataclass next to its code; :class:`RunConfig` composes them.
Loading walks the dataclasses, so an unknown key is reported with the nearest valid one, a wrong
type names the field and the expected type, and impossible combinations fail before anything is
written (STYLE §10).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from longrl.errors import UserError
from longrl.models.tiny import TinyModelConfig, TinyVLMConfig
from longrl.rewards.options import CodeRewardConfig, MathRewardConfig, RewardTermConfig
from longrl.tasks.countdown import SEARCH_ORDERS

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class ModelConfig:
    path: str | None = None  # local Hugging Face model folder; None builds the built-in tiny model
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)  # used when path is None
    vision: bool = False  # with path None: the built-in tiny VLM (LLaVA: tiny_vision's tower before model.tiny)
    tiny_vision: TinyVLMConfig = field(default_factory=TinyVLMConfig)  # used when path is None and vision
    dtype: str = "float32"  # compute dtype: bfloat16 autocasts over fp32 master weights and optimizer state
    # (longrl/models/precision.py); float32 on CPU (bf16 matmul is slow there); float64 for exact checks
    chat_template: bool = False  # wrap prompts with the tokenizer's chat template (instruct models)
    # a vision-language model's vision encoder keeps its weights through SFT, RL and DPO (the projector
    # and language model train), as LLaVA's instruction tuning and EasyR1's freeze_vision_tower do
    freeze_vision_tower: bool = False
    device: str = "auto"  # auto (a GPU when torch sees one, else CPU), cpu, cuda, cuda:N

    def validate(self) -> None:
        if self.dtype == "float16":
            raise UserError("model.dtype=float16: fp16 training needs loss scaling, which longrl does not do; "
                            "use bfloat16 (same memory and speed on GPUs since Ampere) or float32")
        if self.dtype not in ("float32", "bfloat16", "float64"):
            raise UserError(f"model.dtype: {self.dtype!r}; choose float32, bfloat16 or float64")
        if self.device != "auto" and self.device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", self.device):
            raise UserError(f"model.device: {self.device!r}; choose auto, cpu, cuda or cuda:N")
        if self.path is not None and not Path(self.path).is_dir():
            raise UserError(f"model.path: {self.path} is not a directory")
        if self.vision and self.path is not None:
            raise UserError("model.vision=true builds the built-in tiny VLM; with model.path the folder's own "
                            "config says whether it is a vision-language model (leave model.vision false)")
        if self.freeze_vision_tower and self.path is None and not self.vision:
            raise UserError("model.freeze_vision_tower=true: the built-in tiny model has no vision tower "
                            "(set model.vision=true, or model.path to a vision-language model)")
        v = self.tiny_vision
        if self.vision and v.reading_steps < 0:
            raise UserError(f"model.tiny_vision.reading_steps={v.reading_steps}: choose 0 or more")
        if self.vision and v.image_size % v.patch_size:
            raise UserError(f"model.tiny_vision: image_size={v.image_size} is not a multiple of "
                            f"patch_size={v.patch_size}")


@dataclass
class DataConfig:
    # built-in task name, or a prompt source (longrl/data/sources.py): a JSONL/Parquet file, a dataset
    # folder, or hf:NAME[:SPLIT] / hf:NAME:CONFIG:SPLIT (a Hugging Face dataset)
    task: str = "countdown"
    levels: list[int] = field(default_factory=lambda: [1, 2, 3])  # built-in task levels to train on
    heldout_per_level: int = 150  # built-in held-out problems per level (450 in all)
    eval_file: str | None = None  # held-out prompt source when training on one (same forms as task)
    skip_invalid: bool = False  # skip bad rows (written to rejects.jsonl) instead of stopping
    task_default: str = "math"  # scorer of a row with no `task` column that data_source/ability do not name
    prompt_key: str | None = None  # column holding the prompt (text or chat messages); None: auto-detect
    answer_key: str | None = None  # column holding the reference (dotted for nested fields); None: auto-detect
    response_key: str | None = None  # SFT: column holding the response; None: response, completion or messages
    # several sources in one run, each with its share of the training pool (and, built in, of the warm-up
    # traces): {countdown: 0.5, countdown_image: 0.5} trains on text and image prompts; replaces data.task
    mix: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        if not 0 < self.heldout_per_level <= 150:
            raise UserError(f"data.heldout_per_level={self.heldout_per_level}: the built-in held-out sets hold "
                            "1 to 150 problems per level")
        if self.mix and self.task != DataConfig.task:
            raise UserError(f"data.mix names the run's sources; leave data.task unset (it is {self.task!r})")
        bad = {k: v for k, v in self.mix.items() if not isinstance(v, (int, float)) or v <= 0}
        if bad:
            raise UserError(f"data.mix: shares must be positive numbers, got {bad}")
        # a task name, checked against the scorers (built-in or rewards.custom) once prompts are loaded
        if not self.task_default.strip():
            raise UserError("data.task_default: empty; name the scorer of rows that name none (e.g. math)")
        for name in ("prompt_key", "answer_key", "response_key"):
            key = getattr(self, name)
            if key is not None and (not key.strip() or any(not part for part in key.split("."))):
                raise UserError(f"data.{name}: {key!r} is not a column name (use dots for nested fields: a.b)")


@dataclass
class SFTConfig:
    enabled: bool = True  # run the warm-up when no warm checkpoint exists
    data: str | None = None  # JSONL of {"prompt", "response"}; None = the built-in task's traces
    examples: int = 24000  # built-in traces to write
    give_up_prob: float = 0.5  # share of built-in traces whose searcher gives up early
    slip_prob: float = 0.05  # per-attempt chance of an arithmetic slip that is then corrected
    search_order: str = "random"  # built-in traces try first steps in a random or a fixed (systematic) order
    epochs: float = 1.0  # passes over the data
    batch_tokens: int = 4096  # tokens per optimizer step (length-bucketed, not padded to the max)
    lr: float = 3e-3  # peak learning rate (AdamW), cosine decay after a 3% warm-up
    weight_decay: float = 0.0
    warm_dir: str | None = None  # where the warm checkpoint lives; default runs/_warm/<model hash>

    def validate(self) -> None:
        if self.batch_tokens <= 0 or self.epochs <= 0 or self.lr <= 0:
            raise UserError("sft.batch_tokens, sft.epochs and sft.lr must be positive")
        if self.search_order not in SEARCH_ORDERS:
            raise UserError(f"sft.search_order: {self.search_order!r}; choose {' or '.join(SEARCH_ORDERS)}")


@dataclass
class RolloutConfig:
    engine: str = "hf"  # rollout engine: hf (transformers, CPU/GPU) or vllm
    placement: str = "colocated"  # colocated: engine sleeps while training (hybrid); separate: own devices
    k: int = 8  # samples per prompt (the group for the mean baseline)
    batch_prompts: int = 16  # prompts per iteration
    max_length: int = 192  # max new tokens per response
    temperature: float = 1.0  # sampling temperature (log-probs are of logits / temperature)
    top_p: float = 1.0  # nucleus sampling mass (training needs 1.0: the loss uses the full softmax)
    max_batch: int = 256  # sequences decoded together
    repeat_max_period: int = 0  # stop a sample whose last repeat_window tokens repeat an n-gram, n <= this; 0: off
    repeat_window: int = 64  # tokens that must be periodic before the repeat detector fires
    repeat_penalty: float = 0.0  # added to the reward of a sample stopped for repetition (e.g. -0.5)

    def validate(self) -> None:
        if self.repeat_max_period < 0 or (self.repeat_max_period and self.repeat_window <= self.repeat_max_period):
            raise UserError(f"rollout.repeat_window ({self.repeat_window}) must exceed rollout.repeat_max_period "
                            f"({self.repeat_max_period}), which must be >= 0")
        if self.placement not in ("colocated", "separate"):
            raise UserError(f"rollout.placement: {self.placement!r}; choose colocated or separate")
        if self.k < 2:
            raise UserError(f"rollout.k={self.k}: k must be at least 2 (the mean baseline needs a group)")
        if self.temperature <= 0:
            raise UserError("rollout.temperature must be > 0 for RL sampling")
        if not 0 < self.top_p <= 1:
            raise UserError("rollout.top_p must be in (0, 1]")
        if self.max_length <= 0 or self.batch_prompts <= 0:
            raise UserError("rollout.max_length and rollout.batch_prompts must be positive")


@dataclass
class RLConfig:
    algorithm: str = "mirror_descent"  # update rule: mirror_descent (k1.5), rest, grpo
    iterations: int = 60  # RL iterations
    tau: float = 0.1  # k1.5 regulariser weight on (log pi - log pi_i)^2
    lr: float = 1e-4  # learning rate; the optimizer is reset every iteration
    lr_final: float | None = None  # cosine decay from lr at the first iteration to this at the last (None: constant)
    lr_per_response: bool = True  # with rl.mini_batches steps per iteration, scale lr by the responses trained
    # this iteration / (batch_prompts x k): partial rollouts' batches vary, and a reset AdamW step moves every
    # weight by ~lr whatever the batch (a no-op without partial rollouts; none with rl.mini_batch_size)
    optimizer: str = "adamw"  # adamw, or sgd: plain gradient steps; its lr is on another scale
    # (0.1 with sgd moved the quickstart as far as 5e-5 with adamw; docs/benchmarks.md, Quickstart)
    epochs: int = 1  # passes over one iteration's samples
    mini_batches: int = 2  # optimizer steps per epoch
    mini_batch_size: int | None = None  # responses per optimizer step instead (steps follow the batch size)
    micro_batch_tokens: int | None = None  # tokens per forward/backward; no effect on the gradient
    # (None: 2048 on a CPU, where small micro-batches stay in cache, 8192 on a GPU)
    grad_clip: float = 1.0  # max global gradient norm
    activation_checkpointing: bool = False  # recompute each decoder layer's activations in the backward:
    # keeps one length x hidden input per layer instead of all its intermediates, for ~1 more decoder forward
    # per backward; same gradients (bench/long_context.py)
    horizon: int | None = None  # divide each sequence loss by this many tokens (None: rollout.max_length)
    clip_eps: float = 0.2  # grpo only: ratio clip
    scale_rewards: str | None = None  # divide advantages by the reward std of each group (group, GRPO's
    # default), of the batch (batch) or not at all (none, k1.5's); None: the algorithm's own. An ablation knob
    token_mean: bool = False  # mirror_descent only: divide each sequence log-prob by its length (GRPO's token
    # mean per sequence; k1.5 sums over tokens). An ablation knob
    mask_truncated: bool = False  # leave responses stopped at rollout.max_length out of the loss (DAPO's
    # overlong filtering); they still count in their group's mean, so every response kept trains with the
    # advantage k1.5 gives it. On in the quickstart preset
    mask_truncated_baseline: bool = False  # with mask_truncated: take the group mean over the responses kept
    # instead, so their advantages sum to zero per group (-2.9 points on the quickstart, docs/benchmarks.md)
    weight_decay: float = 0.0

    def validate(self) -> None:
        if self.tau < 0 or self.lr <= 0 or self.iterations < 0 or self.epochs < 1 or self.mini_batches < 1:
            raise UserError("rl: tau >= 0, lr > 0, iterations >= 0, epochs >= 1 and mini_batches >= 1")
        if self.lr_final is not None and not 0 < self.lr_final <= self.lr:
            raise UserError(f"rl.lr_final={self.lr_final}: must be in (0, rl.lr={self.lr}] (or null for a constant lr)")
        if self.mini_batch_size is not None and self.mini_batch_size < 1:
            raise UserError(f"rl.mini_batch_size={self.mini_batch_size}: must be >= 1 (or null)")
        if self.optimizer not in ("adamw", "sgd"):
            raise UserError(f"rl.optimizer={self.optimizer!r}: choose adamw or sgd")
        if self.scale_rewards not in (None, "none", "group", "batch"):
            raise UserError(f"rl.scale_rewards={self.scale_rewards!r}: choose none, group or batch (or null)")
        if self.token_mean and self.algorithm != "mirror_descent":
            raise UserError(f"rl.token_mean applies to mirror_descent only, not {self.algorithm}")
        if self.scale_rewards is not None and self.algorithm == "rest":
            raise UserError("rl.scale_rewards: rest trains on weights, not advantages; leave it null")
        if self.mask_truncated_baseline and not self.mask_truncated:
            raise UserError("rl.mask_truncated_baseline=true needs rl.mask_truncated=true (without it every "
                            "response is in the loss and in the baseline)")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 1:
            raise UserError(f"rl.micro_batch_tokens={self.micro_batch_tokens}: must be >= 1 (or null)")


@dataclass
class PartialConfig:
    enabled: bool = False  # k1.5 partial rollouts: long trajectories continue across iterations
    budget: int | None = None  # new tokens per trajectory per iteration (None: rollout.max_length // 4);
    # rollout.max_length stays the overall cap
    loss_segments: str = "last"  # last: only a trajectory's final segment is in the loss; all: every segment
    max_staleness: int = 0  # drop a group whose oldest trajectory began > this many iterations ago; 0: never

    def budget_for(self, max_length: int) -> int | None:
        """Tokens per trajectory per iteration, or None when partial rollouts are off."""
        if not self.enabled:
            return None
        return self.budget if self.budget is not None else max(1, max_length // 4)


@dataclass
class LengthPenaltyConfig:
    weight: float = 0.0  # w_len; 0 turns the k1.5 length reward off
    warmup_iters: int = 0  # iterations with w_len = 0 before it switches on


@dataclass
class SamplingConfig:
    strategy: str = "uniform"  # uniform, curriculum, prioritized, curriculum+prioritized
    curriculum_warmup_iters: int | None = None  # curriculum: iterations on all prompts before the hard-only
    # phase (None: a third of rl.iterations, as this repo's curriculum runs used; 0: hard prompts from the start)
    hard_threshold: float = 0.5  # curriculum: keep prompts with difficulty >= this after warm-up
    eps: float = 0.05  # prioritized: P(i) ~ (1 - s_i) + eps
    pool_size: int = 20000  # built-in task: training prompts drawn up front for the sampler

    def warmup_iters(self, iterations: int) -> int:
        """The curriculum's all-prompts phase in iterations, given the run's ``rl.iterations``."""
        return iterations // 3 if self.curriculum_warmup_iters is None else self.curriculum_warmup_iters


@dataclass
class EvalConfig:
    every: int = 0  # evaluate every N iterations (0: only before and after RL)
    n_samples: int = 4  # samples per held-out prompt for pass@1 (at the rollout temperature)
    greedy: bool = True  # also report greedy accuracy


@dataclass
class CheckpointConfig:
    every: int = 20  # save every N iterations (and at the end)
    keep: int = 2  # newest checkpoints kept; older ones are pruned


@dataclass
class ClusterConfig:
    """Where the workers run: a backend of :mod:`longrl.train.backends` (DESIGN §7)."""

    backend: str = "local"  # local: everything in this process; ray: trainer/rollout/reward workers on Ray
    address: str | None = None  # ray: None starts a local Ray instance; "auto" or "HOST:PORT" joins a cluster
    trainer_workers: int = 1  # data-parallel torch.distributed trainer workers (gloo on CPU, NCCL on GPU)
    rollout_workers: int = 1  # rollout engines; each iteration's requests are split among them
    reward_workers: int = 0  # scoring actors; 0 scores in the driver
    cpus_per_worker: float = 1.0  # CPUs reserved for each worker (also its torch threads, at least 1)
    gpus_per_worker: float = 0.0  # GPUs for each trainer and rollout worker; > 0 selects NCCL
    num_cpus: int | None = None  # a local Ray instance's logical CPUs (None: this machine's cores)
    sharding: str = "replicate"  # ray trainer group: replicate (each rank a full copy, DDP-style) or fsdp
    # (FSDP2: parameters, gradients and AdamW state sharded over the ranks; longrl/distributed/fsdp.py)
    reshard_after_forward: bool = True  # fsdp: free each layer's gathered weights after its forward
    # (gathered again for the backward); false keeps them until the backward: more memory, less traffic
    mixed_precision: bool = False  # fsdp: gather and compute in bf16, reduce gradients in fp32, over
    # fp32 master weights (FSDP2 MixedPrecisionPolicy); for GPUs, or CPUs with native bf16

    def validate(self) -> None:
        from longrl.train.backends import backend_names  # a leaf: names only, no backend is imported

        if self.backend not in backend_names():
            raise UserError(f"cluster.backend: {self.backend!r}; choose {' or '.join(backend_names())}")
        if self.trainer_workers < 1 or self.rollout_workers < 1 or self.reward_workers < 0:
            raise UserError("cluster.trainer_workers and cluster.rollout_workers must be >= 1, "
                            "cluster.reward_workers >= 0")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise UserError("cluster.cpus_per_worker must be > 0 and cluster.gpus_per_worker >= 0")
        if self.sharding not in ("replicate", "fsdp"):
            raise UserError(f"cluster.sharding: {self.sharding!r}; choose replicate or fsdp")
        if self.sharding == "fsdp" and self.backend != "ray":
            raise UserError(f"cluster.sharding=fsdp shards the model over a Ray trainer group; it needs "
                            f"cluster.backend=ray (got {self.backend!r})")
        if self.mixed_precision and self.sharding != "fsdp":
            raise UserError("cluster.mixed_precision=true is FSDP's policy: it needs cluster.sharding=fsdp "
                            "(model.dtype=bfloat16 sets the compute precision otherwise)")
        if self.mixed_precision and not self.gpus_per_worker and not _cpu_has_bf16():
            raise UserError("cluster.mixed_precision=true on CPU trainer workers (cluster.gpus_per_worker=0), "
                            "but this CPU has no native bf16 (AVX512-BF16 or AMX); set it to false")


def _cpu_has_bf16() -> bool:
    """Whether this machine's CPU computes bf16 natively (oneDNN's check); emulated bf16 is many times slower."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class RewardsConfig:
    """What scores the responses (DESIGN §6). ``longrl.rewards.compose.build_router`` reads it in
    every place that scores: train, eval, long2short, curate and the Ray reward workers."""

    math: MathRewardConfig = field(default_factory=MathRewardConfig)
    code: CodeRewardConfig = field(default_factory=CodeRewardConfig)
    custom: dict[str, str] = field(default_factory=dict)  # task -> its scorer: module:function,
    # path/to/file.py:function, an http(s) reward endpoint, or a built-in scorer name (e.g. gsm8k: math)
    terms: dict[str, dict[str, RewardTermConfig]] = field(default_factory=dict)  # task -> name -> an extra
    # weighted term added to the task's reward (each logged as reward/term/<name>); a string is {fn: it}
    timeout: float = 30.0  # seconds per call of a reward function (per response in verl's form, per batch
    # in TRL's and longrl's) and per request to a reward endpoint
    workers: int = 1  # processes per reward function
    retries: int = 2  # reward endpoint: retries of a failed request before its batch scores 0 (remote_error)
    token_env: str = "LONGRL_REWARD_TOKEN"  # reward endpoint: environment variable holding its bearer token

    def __post_init__(self) -> None:
        # dict-valued fields: the loader builds dataclasses only, so the values are checked here
        if not isinstance(self.custom, dict) or not all(isinstance(v, str) for v in self.custom.values()):
            raise UserError(f"rewards.custom: expected a mapping of task -> 'module:function', got {self.custom!r}")
        if not isinstance(self.terms, dict):
            raise UserError(f"rewards.terms: expected a mapping of task -> term name -> {{fn, weight}}, "
                            f"got {self.terms!r}")
        for task, terms in list(self.terms.items()):
            if not isinstance(terms, dict):
                raise UserError(f"rewards.terms.{task}: expected a mapping of term name -> {{fn, weight}}, "
                                f"got {terms!r}")
            self.terms[task] = {name: self._term(t, f"rewards.terms.{task}.{name}") for name, t in terms.items()}

    @staticmethod
    def _term(t: Any, where: str) -> RewardTermConfig:
        if isinstance(t, RewardTermConfig):
            return t
        if isinstance(t, str):
            t = {"fn": t}
        if not isinstance(t, dict):
            raise UserError(f"{where}: expected {{fn, weight}} or 'module:function', got {t!r}")
        return build(RewardTermConfig, t, where)

    def validate(self) -> None:
        """Every named function is imported and its signature checked now, before anything is written."""
        from longrl.rewards.options import RESERVED_TERMS, check_source, has_scorer

        self.math.validate()
        self.code.validate()
        if self.timeout <= 0 or self.workers < 1 or self.retries < 0:
            raise UserError("rewards: timeout > 0, workers >= 1 and retries >= 0")
        for task, source in self.custom.items():
            check_source(source, f"rewards.custom.{task}")
        for task, terms in self.terms.items():
            if task not in self.custom and not has_scorer(task):
                raise UserError(f"rewards.terms.{task}: task {task!r} has no scorer to add terms to; bind one "
                                f"with rewards.custom.{task}")
            for name, term in terms.items():
                where = f"rewards.terms.{task}.{name}"
                if name in RESERVED_TERMS:
                    raise UserError(f"{where}: {name!r} is reserved (the task reward and the length penalty); "
                                    "choose another name")
                if not term.fn:
                    raise UserError(f"{where}.fn: name the term's function (module:function or file.py:function)")
                if not abs(term.weight) < float("inf"):  # NaN too
                    raise UserError(f"{where}.weight must be a finite number")
                check_source(term.fn, f"{where}.fn")

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """``--rewards CONFIG`` and ``--set rewards.KEY=VALUE``, for verbs that score without a run config."""
        p.add_argument("--rewards", metavar="CONFIG", help="preset or YAML file whose rewards section configures "
                       "the scorers (default: their built-in options)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="rewards.KEY=VALUE",
                       help="override a rewards option, e.g. --set rewards.custom.my_task=my_rewards.py:exact")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> RewardsConfig:
        """The rewards section of ``--rewards`` with the ``--set`` overrides; validated."""
        for pair in args.overrides:
            if not pair.strip().startswith("rewards."):
                raise UserError(f"--set {pair!r}: only rewards.* options apply here")
        tree = read_yaml(resolve_preset(args.rewards)) if args.rewards else {}
        tree = merge(tree, parse_overrides(args.overrides))
        rewards = _coerce(tree.get("rewards") or {}, cls, "rewards")
        rewards.validate()
        return rewards


@dataclass
class RunConfig:
    name: str | None = None  # run directory name under out; default: a timestamp
    out: str = "runs"  # parent folder of run directories
    seed: int = 0
    threads: int | None = None  # torch CPU threads (None: all cores)
    loggers: list[str] = field(default_factory=list)  # extra metric sinks: tensorboard, wandb
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    partial: PartialConfig = field(default_factory=PartialConfig)
    length_penalty: LengthPenaltyConfig = field(default_factory=LengthPenaltyConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if hasattr(v, "validate"):
                v.validate()
        from longrl.algo import algorithm_names

        if self.rl.algorithm not in algorithm_names():
            raise UserError(f"rl.algorithm: unknown {self.rl.algorithm!r}; choose from {algorithm_names()}")
        if self.rollout.engine not in ("hf", "vllm"):
            raise UserError(f"rollout.engine: unknown {self.rollout.engine!r}; choose hf or vllm")
        if self.partial.enabled:
            p = self.partial
            if p.loss_segments not in ("last", "all"):
                raise UserError(f"partial.loss_segments: {p.loss_segments!r}; choose last or all")
            budget = p.budget_for(self.rollout.max_length)
            if budget <= 0:
                raise UserError(f"partial.budget={budget}: the per-iteration token budget must be positive")
            if budget > self.rollout.max_length:
                raise UserError(f"partial.budget={budget} is larger than rollout.max_length="
                                f"{self.rollout.max_length}: every trajectory would finish in one iteration")
            if p.max_staleness < 0:
                raise UserError("partial.max_staleness must be >= 0 (0: no cap)")
        if self.rl.algorithm != "grpo" and self.rollout.top_p < 1:
            raise UserError("rollout.top_p < 1 with rl.algorithm != grpo: the k1.5 loss needs the full "
                            "sampling distribution; set rollout.top_p=1")


# ------------------------------------------------------------------------------- loading


_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int -> float allowed), building dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except UserError as e:
                errors.append(e)
        raise UserError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_FLOAT.match(value):
        return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string; users mean a number
    if tp in (int, float, str, bool):
        if type(value) is not tp:
            raise UserError(f"{where}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
        return value
    return value


def build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, naming unknown keys and the nearest valid one."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {(where + '.' if where else '') + near[0]!r}?" if near else ""
            raise UserError(f"unknown config key {path!r}{hint} (valid: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {dotted}: {k!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["rl.tau=0.05", "rollout.k=16"]`` -> nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set rl.tau=0.05")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_preset(name_or_path: str) -> Path:
    """A YAML path, or the name of a preset shipped with longrl (``quickstart``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    preset = PRESET_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if preset.is_file():
        return preset
    names = sorted(x.stem for x in PRESET_DIR.glob("*.yaml"))
    raise UserError(f"config {name_or_path!r}: no such file, and not a preset ({', '.join(names)})")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of config sections")
    return data


def load_config(config: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Preset or YAML file, then ``--set`` overrides; validated."""
    tree = read_yaml(resolve_preset(config or "quickstart"))
    tree = merge(tree, parse_overrides(overrides or []))
    cfg = build(RunConfig, tree)
    cfg.validate()
    return cfg


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every config-driven verb shares: a preset or YAML file, ``--set``, ``--quiet``."""
    p.add_argument("config", nargs="?", help="preset name or YAML file (default: quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set rl.tau=0.05 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
