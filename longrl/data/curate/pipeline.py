"""``longrl curate``: the k1.5 §2.1 prompt-set funnel, cheap rules first, then the model stages.

Stages, in order, each switchable in the ``curate`` config section:

1. ``format``  — drop multiple-choice, true/false and proof prompts (:mod:`.rules`)
2. ``dedup``   — exact and near duplicates (:mod:`.dedup`)
3. ``decontam`` — word n-gram overlap with every shipped benchmark and ``--decontaminate`` files (:mod:`.decontam`)
4. ``tags``    — a domain tag on every prompt; optional caps per tag (:mod:`.tags`)
5. ``difficulty`` — pass rate over n samples; always-solved prompts dropped (:mod:`.model_stages`)
6. ``hack``    — prompts a no-reasoning guess solves are dropped (:mod:`.model_stages`)

Outputs in ``--out``: ``kept.jsonl`` (trainable as is: ``longrl train --set data.task=DIR/kept.jsonl``),
``rejected.jsonl`` (every dropped row with its stage, rule and reason), ``curation_report.json`` and
``curation_report.html`` with its plots. Every input prompt is in exactly one of the two files
(checked before anything is written). The model stages record each finished prompt under
``.curate_state/``: running the same command again continues a killed run where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longrl.config import DataConfig, ModelConfig, RewardsConfig
from longrl.data.curate.rules import Drop
from longrl.errors import UserError
from longrl.types import Prompt

STATE_DIR = ".curate_state"


@dataclass
class CurateConfig:
    # rule stages
    format_filter: bool = True  # drop multiple-choice, true/false and proof prompts
    dedup: bool = True  # drop exact and near duplicates (the first occurrence is kept)
    near_dup_threshold: float = 0.85  # MinHash Jaccard estimate above which two prompts are near copies
    decontaminate: bool = True  # drop prompts sharing a word n-gram with a benchmark
    decontam_ngram: int = 8  # n of the word n-grams (open-r1's decontaminator uses 8)
    decontam_common: int = 8  # an n-gram in this many reference problems is boilerplate, not a match; 0: off
    decontam_benchmarks: list[str] | None = None  # shipped benchmarks to check against; None: all of them
    tag_cap: int | dict[str, int] = 0  # keep the first N prompts of each domain tag (or {tag: N}); 0: no cap
    # model stages
    difficulty: bool = True  # pass rate over n samples; difficulty = 1 - pass rate
    n: int = 10  # samples per prompt for the pass rate
    temperature: float = 1.0
    max_tokens: int = 192  # max new tokens per sample
    drop_pass_rate: float = 1.0  # drop prompts whose pass rate is at least this (1.0: always solved)
    drop_unsolved: bool = False  # also drop prompts no sample solved
    hack_filter: bool = True  # drop prompts a direct answer (no reasoning) solves within hack_n tries
    hack_n: int = 8
    hack_max_tokens: int = 24  # the short cap that leaves no room for reasoning
    hack_temperature: float = 1.0
    engine: str = "hf"  # rollout engine for the model stages: hf or vllm
    batch_prompts: int = 32  # prompts per engine call (and per state record)
    seed: int = 0

    def validate(self) -> None:
        for name in ("near_dup_threshold", "drop_pass_rate"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise UserError(f"curate.{name}={v}: must be in [0, 1]")
        for name in ("n", "hack_n", "max_tokens", "hack_max_tokens", "batch_prompts", "decontam_ngram"):
            if getattr(self, name) < 1:
                raise UserError(f"curate.{name}={getattr(self, name)}: must be at least 1")
        caps = self.tag_cap.values() if isinstance(self.tag_cap, dict) else [self.tag_cap]
        if any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in caps):
            raise UserError(f"curate.tag_cap={self.tag_cap}: a count >= 0, or a mapping of tag to count")
        if self.decontam_common < 0:
            raise UserError(f"curate.decontam_common={self.decontam_common}: must be >= 0 (0: off)")
        for name in ("temperature", "hack_temperature"):
            if getattr(self, name) <= 0:
                raise UserError(f"curate.{name}={getattr(self, name)}: sampling needs a temperature > 0")
        if self.dedup and self.near_dup_threshold == 0:
            raise UserError("curate.near_dup_threshold=0 would merge every pair; use a value in (0, 1]")
        if self.engine not in ("hf", "vllm"):
            raise UserError(f"curate.engine: {self.engine!r}; choose hf or vllm")
        if self.decontam_benchmarks is not None:
            from longrl.eval.benchmarks import benchmark_names

            unknown = sorted(set(self.decontam_benchmarks) - set(benchmark_names()))
            if unknown:
                raise UserError(f"curate.decontam_benchmarks: unknown {unknown}; choose from {benchmark_names()}")

    @property
    def uses_model(self) -> bool:
        return self.difficulty or self.hack_filter


@dataclass
class CurateRun:
    """The config tree ``longrl curate`` reads: ``curate``, ``data`` (loading), ``model`` and ``rewards``
    (the verifiers, as a training run configures them)."""

    curate: CurateConfig = field(default_factory=CurateConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)

    def validate(self) -> None:
        self.curate.validate()
        self.data.validate()
        self.model.validate()
        self.rewards.validate()


# ------------------------------------------------------------------------------- input


def load_input(source: str, data: DataConfig, limit: int | None = None, seed: int = 0
               ) -> tuple[list[Prompt], list[dict[str, Any]]]:
    """Prompts from a file, ``hf:NAME[:SPLIT]``, a dataset folder, or ``countdown``, and the rows
    skipped as invalid under ``data.skip_invalid`` (as ``rejected.jsonl`` rows of stage ``load``)."""
    from longrl.data.sources import read_task_prompts

    prompts, rejects = read_task_prompts(source, data, limit=limit, seed=seed)
    where = "index" if rejects.unit == "index" else "line"
    skipped = [{"stage": "load", "rule": "invalid_row", "reason": reason, "source": str(rejects.source or source),
                where: line, "row": raw} for line, reason, raw in rejects.rows]
    return prompts, skipped


def input_digest(prompts: list[Prompt]) -> str:
    """A hash of what curation reads of the prompts: resuming with other input is refused."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps([p.id, p.text, p.messages, p.reference, p.task], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------- the funnel


def rule_stages(prompts: list[Prompt], cfg: CurateConfig, extra_refs: dict[str, list[Prompt]]
                ) -> tuple[list[Prompt], list[Drop], dict[str, Any]]:
    """Stages 1-4 (no model): the kept prompts (domain-tagged), the drops and the report's part."""
    from longrl.data.curate import dedup, decontam, rules, tags

    report: dict[str, Any] = {"stages": []}
    dropped: list[Drop] = []

    def take(stage: str, kept: list[Prompt], drops: list[Drop]) -> list[Prompt]:
        dropped.extend(drops)
        report["stages"].append(_stage_row(stage, len(kept) + len(drops), kept, drops))
        return kept

    if cfg.format_filter:
        prompts = take("format", *rules.format_filter(prompts))
    if cfg.dedup:
        prompts = take("dedup", *dedup.deduplicate(prompts, threshold=cfg.near_dup_threshold))
    if cfg.decontaminate:
        refs = benchmark_prompts(cfg.decontam_benchmarks) | extra_refs
        res = decontam.decontaminate(prompts, refs, n=cfg.decontam_ngram, common=cfg.decontam_common)
        prompts = take("decontam", res.kept, res.dropped)
        report["decontamination"] = {"ngram": cfg.decontam_ngram, "common": cfg.decontam_common,
                                     "against": sorted(refs), "removed_per_benchmark": res.per_benchmark}
    res = tags.cap_tags(prompts, cfg.tag_cap or None)
    prompts = take("tags", res.kept, res.dropped)
    report["tags"] = {"before": res.before, "after": res.after}
    return prompts, dropped, report


def benchmark_prompts(names: list[str] | None) -> dict[str, list[Prompt]]:
    """The shipped benchmarks' prompts (all but the built-in tasks' when ``names`` is None)."""
    from longrl.eval.benchmarks import benchmark_names, load_benchmark
    from longrl.tasks.registry import task_names

    names = [n for n in benchmark_names() if n not in task_names()] if names is None else names
    return {n: load_benchmark(n) for n in names}


def reference_file_prompts(paths: list[str]) -> dict[str, list[Prompt]]:
    """``--decontaminate SOURCE ...``: each source's prompts (default columns), named ``file:SOURCE``."""
    from longrl.data.sources import read_task_prompts

    out: dict[str, list[Prompt]] = {}
    for path in paths:
        name = f"file:{path}"
        if name in out:
            raise UserError(f"--decontaminate {path}: given twice")
        out[name] = read_task_prompts(path, field="--decontaminate")[0]
    return out


def model_stages(prompts: list[Prompt], run: CurateRun, state_dir: Path, *, progress: bool = True
                 ) -> tuple[list[Prompt], list[Drop], dict[str, Any]]:
    """Stages 5-6: pass rates and the hack filter, resumable through the state file."""
    from tqdm.auto import tqdm

    from longrl.data.curate.model_stages import DIRECT_ANSWER, StageState, run_stage, sampler

    cfg = run.curate
    state = StageState(state_dir)
    report: dict[str, Any] = {"stages": []}
    dropped: list[Drop] = []
    opened: dict[str, Any] = {}

    def engine_and_router():
        """Opened at the first prompt to sample: a finished run read from the state loads no model."""
        if not opened:
            from longrl.models.loading import quiet_transformers
            from longrl.rewards.compose import build_router
            from longrl.rollout.text import check_lengths, open_engine

            quiet_transformers()
            te = open_engine(run.model.path, engine=cfg.engine, dtype=run.model.dtype,
                             chat_template=run.model.chat_template, seed=cfg.seed)
            opened["te"] = te
            check_lengths(te, prompts, max(cfg.max_tokens if cfg.difficulty else 0,
                                           cfg.hack_max_tokens if cfg.hack_filter else 0))
            opened["router"] = build_router(run.rewards, tasks={p.task for p in prompts})
        return opened["te"], opened["router"]

    def lazy(stage_sampler: Callable[..., Any], **kw: Any):
        def sample(ps: list[Prompt]):
            te, router = engine_and_router()
            return stage_sampler(te, router, **kw)(ps)
        return sample

    todo = sum(state.get("difficulty", p.id) is None for p in prompts) if cfg.difficulty else 0
    bar = tqdm(total=todo, desc="curate: difficulty" if cfg.difficulty else "curate: hack filter", unit="prompt",
               disable=not progress, dynamic_ncols=True)
    try:
        if cfg.difficulty:
            t0 = time.time()
            verdicts = run_stage("difficulty", prompts, state,
                                 lazy(sampler, n=cfg.n, max_new_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                      seed=cfg.seed, salt="difficulty:"),
                                 chunk=cfg.batch_prompts, progress=bar.update)
            kept = []
            for p in prompts:
                v = verdicts[p.id]
                p = dataclasses.replace(p, pass_rate=v.pass_rate, difficulty=1.0 - v.pass_rate)
                if v.pass_rate >= cfg.drop_pass_rate and v.pass_rate > 0:
                    dropped.append(Drop(p, "difficulty", "too_easy",
                                        f"pass rate {v.pass_rate:.2f} >= {cfg.drop_pass_rate}"))
                elif cfg.drop_unsolved and v.pass_rate == 0:
                    dropped.append(Drop(p, "difficulty", "unsolved", f"0 of {len(v.correct)} samples correct"))
                else:
                    kept.append(p)
            report["difficulty"] = _difficulty_report(prompts, verdicts, cfg)
            report["difficulty"]["throughput"] = _rate(todo, time.time() - t0, cfg.n)
            report["stages"].append(_stage_row("difficulty", len(prompts), kept, dropped))
            prompts = kept
        if cfg.hack_filter:
            hackable = [p for p in prompts if p.task in DIRECT_ANSWER]
            todo_hack = sum(state.get("hack", p.id) is None for p in hackable)
            bar.reset(total=todo_hack)
            bar.set_description("curate: hack filter")
            t0, n_before = time.time(), len(dropped)
            verdicts = run_stage("hack", hackable, state,
                                 lazy(sampler, n=cfg.hack_n, max_new_tokens=cfg.hack_max_tokens,
                                      temperature=cfg.hack_temperature, seed=cfg.seed, salt="hack:", direct=True),
                                 chunk=cfg.batch_prompts, progress=bar.update)
            kept = []
            for p in prompts:
                v = verdicts.get(p.id)
                if v is not None and any(v.correct):
                    dropped.append(Drop(p, "hack", "easy_to_hack",
                                        f"{sum(v.correct)} of {len(v.correct)} direct answers correct"))
                else:
                    kept.append(p)
            report["hack"] = {"checked": len(hackable), "dropped": len(dropped) - n_before,
                              "not_checked_tasks": dict(Counter(p.task for p in prompts if p.task not in DIRECT_ANSWER)),
                              "throughput": _rate(todo_hack, time.time() - t0, cfg.hack_n)}
            report["stages"].append(_stage_row("hack", len(prompts), kept, dropped[n_before:]))
            prompts = kept
    finally:
        bar.close()
        if "router" in opened:
            opened["router"].close()
        if "te" in opened:
            opened["te"].close()
    return prompts, dropped, report


def _stage_row(stage: str, n_in: int, kept: list[Prompt], dropped: list[Drop]) -> dict[str, Any]:
    mine = [d for d in dropped if d.stage == stage]
    return {"stage": stage, "in": n_in, "dropped": len(mine), "out": len(kept),
            "rules": dict(Counter(d.rule for d in mine))}


def _rate(prompts: int, seconds: float, n: int) -> dict[str, Any]:
    return {"prompts_sampled": prompts, "samples_per_prompt": n, "seconds": round(seconds, 2),
            "prompts_per_min": round(60 * prompts / seconds, 2) if prompts and seconds > 0 else None}


def _difficulty_report(prompts: list[Prompt], verdicts, cfg: CurateConfig) -> dict[str, Any]:
    from longrl.data.curate.model_stages import spearman

    rates = [verdicts[p.id].pass_rate for p in prompts]
    hist = Counter(round(r * cfg.n) for r in rates)
    out: dict[str, Any] = {
        "n": cfg.n, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens,
        "mean_pass_rate": round(sum(rates) / len(rates), 4) if rates else None,
        "solved_per_prompt": {f"{k}/{cfg.n}": hist.get(k, 0) for k in range(cfg.n + 1)},
    }
    leveled = [(p.level, 1.0 - verdicts[p.id].pass_rate) for p in prompts if p.level is not None]
    if leveled:
        out["spearman_difficulty_vs_level"] = spearman([lv for lv, _ in leveled], [d for _, d in leveled])
        by_level: dict[int, list[float]] = {}
        for lv, d in leveled:
            by_level.setdefault(lv, []).append(d)
        out["mean_difficulty_per_level"] = {str(k): round(sum(v) / len(v), 4) for k, v in sorted(by_level.items())}
    return out


# ------------------------------------------------------------------------------- outputs


def check_partition(inputs: list[Prompt], kept: list[Prompt], dropped: list[Drop]) -> None:
    """in = kept + rejected, with no prompt in both and none lost; raised as a bug, never written."""
    ids_in = [p.id for p in inputs]
    ids_kept = [p.id for p in kept]
    ids_out = ids_kept + [d.prompt.id for d in dropped]
    if sorted(ids_in) != sorted(ids_out) or len(set(ids_kept) & {d.prompt.id for d in dropped}):
        lost = sorted(set(ids_in) - set(ids_out))[:5]
        both = sorted(set(ids_kept) & {d.prompt.id for d in dropped})[:5]
        raise AssertionError(f"curation lost or doubled prompts: lost {lost}, in both files {both}")


def write_outputs(out: Path, inputs: list[Prompt], kept: list[Prompt], dropped: list[Drop],
                  report: dict[str, Any], skipped: list[dict[str, Any]] = ()) -> list[Path]:
    """kept.jsonl, rejected.jsonl, curation_report.json/.html: each written whole, then renamed.

    ``skipped``: rows the loader could not read (``data.skip_invalid``), first in ``rejected.jsonl``.
    """
    from longrl.data.curate.report import write_html
    from longrl.data.sources import prompt_row

    check_partition(inputs, kept, dropped)
    order = {p.id: i for i, p in enumerate(inputs)}
    dropped = sorted(dropped, key=lambda d: order[d.prompt.id])
    files = {
        "kept.jsonl": "".join(json.dumps(prompt_row(p), ensure_ascii=False) + "\n" for p in kept),
        "rejected.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in skipped) + "".join(
            json.dumps(prompt_row(d.prompt) | {"stage": d.stage, "rule": d.rule, "reason": d.detail}
                       | ({"match": d.match} if d.match else {}), ensure_ascii=False) + "\n"
            for d in dropped),
        "curation_report.json": json.dumps(report, indent=2, default=str) + "\n",
    }
    written = []
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
        written.append(out / name)
    written.append(write_html(out, report))
    return written
