"""A whole run: model, warm-up, RL iterations, evaluation, logging, checkpoints, report.

Everything that can fail on user input (config, model folder, data, prompt lengths) is checked
before the run directory is created, so a bad input leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from longrl.config import RunConfig, dump_yaml, to_dict
from longrl.data.images import images_digest
from longrl.data.rows import Rejects
from longrl.data.sources import BUILTIN, SFTExample
from longrl.errors import UserError
from longrl.models.loading import (
    architecture,
    check_architecture,
    context_length,
    load_model,
    quiet_transformers,
    resolve_device,
    save_model,
    stop_token_ids,
    tiny_architecture,
)
from longrl.models.precision import autocast_dtype, enable_activation_checkpointing, master_dtype
from longrl.models.vision import freeze_vision_tower, load_processor, prompt_length
from longrl.rewards.compose import build_router, check_tasks
from longrl.rollout.hf import HFEngine
from longrl.tasks.registry import BuiltinTask, get_task, is_builtin, task_names
from longrl.train import checkpoint as ckpt
from longrl.train.backends import Workers, make_workers
from longrl.types import Prompt

# ----------------------------------------------------------------------------- data


def load_prompts(cfg: RunConfig) -> tuple[list[Prompt], list[Prompt]]:
    """(training pool, held-out set) for ``data.task``: the built-in task or a prompt source."""
    pool, held, _ = read_prompts(cfg)
    return pool, held


def read_prompts(cfg: RunConfig) -> tuple[list[Prompt], list[Prompt], list[Rejects]]:
    """:func:`load_prompts` and the rows ``data.skip_invalid`` skipped, to write beside the run.

    With ``data.mix`` the pool holds each source's prompts in its share (a built-in task draws as
    many as its share of ``sampling.pool_size``; a file gives a deterministic sample, as large as
    the shares allow without repeating a row) and the held-out set is every built-in task's plus
    ``data.eval_file``, so eval reports each task and modality apart.
    """
    d = cfg.data
    shares = d.mix or {d.task: 1.0}
    parts = {name: _read_source(cfg, name) for name in shares}
    rejects = [r for _, _, rs in parts.values() for r in rs]
    held = [p for _, h, _ in parts.values() for p in h]
    if d.eval_file:
        from longrl.data import sources

        eval_prompts, eval_rejects = sources.read_prompts(d.eval_file, d)
        held += eval_prompts
        rejects += [eval_rejects] if len(eval_rejects) else []
    if len(parts) == 1:
        pool = next(iter(parts.values()))[0]
    else:
        total = sum(shares.values())
        files = [name for name in shares if not is_builtin(name)]
        n = min([cfg.sampling.pool_size] + [int(len(parts[f][0]) * total / shares[f]) for f in files])
        pool = []
        for name, share in shares.items():
            want = max(1, round(n * share / total))
            pool += parts[name][0][:want] if is_builtin(name) else \
                random.Random(f"{cfg.seed}-mix-{name}").sample(parts[name][0], min(want, len(parts[name][0])))
    overlap = {content_key(p) for p in pool} & {content_key(p) for p in held}
    if overlap:
        raise UserError(f"the held-out set shares {len(overlap)} prompt(s) with the training data; held-out "
                        "prompts must never appear in training")
    return pool, held, rejects


def _read_source(cfg: RunConfig, name: str) -> tuple[list[Prompt], list[Prompt], list[Rejects]]:
    """One source's (training prompts, built-in held-out set, rejects): a built-in task or a prompt source."""
    d = cfg.data
    field = "data.mix" if d.mix else "data.task"
    if is_builtin(name):
        task = get_task(name)
        bad = [lv for lv in d.levels if lv not in task.levels]
        if bad:
            raise UserError(f"data.levels: {bad} are not {task.name} levels {list(task.levels)}")
        stream = task.train_prompts(cfg.seed, d.levels)
        return [next(stream) for _ in range(cfg.sampling.pool_size)], task.heldout_prompts(d.heldout_per_level), []
    from longrl.data import sources

    if not name.startswith(sources.HF) and not Path(name).exists():
        raise UserError(f"{field}: {name!r} is neither a built-in task ({', '.join(task_names())}) nor a file, "
                        "dataset folder or hf:NAME[:SPLIT]")
    train, rejects = sources.read_prompts(name, d)
    if not train:
        raise UserError(f"{field}: {name} holds no prompts")
    return train, [], [rejects] if len(rejects) else []


def content_key(p: Prompt) -> str:
    """What makes two prompts the same problem: the text the model reads and its images' bytes."""
    text = p.text if p.messages is None else json.dumps(p.messages, sort_keys=True)
    return text + "\0" + images_digest(p.images)


def check_prompt_lengths(tokenizer, prompts: list[Prompt], cfg: RunConfig, ctx: int, what: str,
                         processor=None) -> None:
    """Refuse, before the run, a prompt too long for the context with ``rollout.max_length`` new tokens
    (an image prompt measured with its image tokens expanded), or one the model cannot read (images
    for a text-only model, placeholders that do not match its images)."""
    for p in prompts:
        n = prompt_length(tokenizer, processor, p, cfg.model.chat_template)
        if n + cfg.rollout.max_length > ctx:
            raise UserError(f"{what}: prompt {p.id!r} is {n} tokens; with rollout.max_length="
                            f"{cfg.rollout.max_length} it exceeds the model's context of {ctx} tokens")


# ----------------------------------------------------------------------------- model + warm-up


def _warm_key(cfg: RunConfig) -> str:
    model = cfg.model.path or asdict(cfg.model.tiny)
    if cfg.model.path is None and cfg.model.vision:
        model = {"lm": model, "vision": asdict(cfg.model.tiny_vision), "corpus": _corpus_tasks(cfg)}
    ident = {"model": model, "sft": asdict(cfg.sft), "seed": cfg.seed,
             "task": _warmup_versions(cfg) if cfg.sft.data is None else cfg.sft.data}
    if cfg.model.freeze_vision_tower:
        ident["freeze_vision_tower"] = True
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def warm_model_dir(cfg: RunConfig, progress: bool = True) -> Path:
    """The policy to start RL from: the warm (SFT) checkpoint, built and cached when missing."""
    if not cfg.sft.enabled:
        if cfg.model.path is None:
            raise UserError("sft.enabled=false needs model.path (the built-in tiny model starts untrained)")
        return Path(cfg.model.path)
    warm = Path(cfg.sft.warm_dir) if cfg.sft.warm_dir else Path(cfg.out) / "_warm" / _warm_key(cfg)
    if (warm / "config.json").is_file():
        if progress:
            print(f"warm checkpoint found: {warm} (SFT skipped)")
        return warm
    from longrl.train.sft import encode_examples, run_sft

    examples, source = sft_examples(cfg)  # bad data stops here, before anything is written
    tmp = warm.with_name(warm.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if cfg.model.path is None and cfg.model.vision:
            from longrl.models.vision import build_tiny_vlm

            corpus = [text for name in _corpus_tasks(cfg) for text in get_task(name).corpus()]
            build_tiny_vlm(tmp, cfg.model.tiny_vision, cfg.model.tiny, corpus, progress=progress)
            model, tok = load_model(tmp)
        elif cfg.model.path is None:
            from longrl.models.tiny import build_tiny_model, task_corpus

            build_tiny_model(tmp, cfg.model.tiny, task_corpus())
            model, tok = load_model(tmp)
        else:
            model, tok = load_model(cfg.model.path, master_dtype(cfg.model.dtype))
        processor = load_processor(tmp if cfg.model.path is None else cfg.model.path)
        if cfg.model.freeze_vision_tower:
            freeze_vision_tower(model)
        model.to(resolve_device(cfg.model.device))
        seqs = encode_examples(tok, examples, context_length(model), cfg.model.chat_template, source, processor)
        if progress:
            print(f"SFT warm-up: {len(seqs)} examples from {source}")
        stats = run_sft(model, tok, seqs, cfg.sft, seed=cfg.seed, progress=progress, dtype=cfg.model.dtype)
        save_model(model, tok, tmp, extra={"stage": "sft", "sft": stats, "base": cfg.model.path or "tiny",
                                           "sft_config": asdict(cfg.sft)}, processor=processor)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written
        raise
    warm.parent.mkdir(parents=True, exist_ok=True)
    if not warm.exists():
        tmp.replace(warm)
    return warm


def expected_architecture(cfg: RunConfig) -> tuple[dict, str]:
    """The architecture the config asks for, and where that expectation comes from."""
    if cfg.model.path is None:
        return tiny_architecture(cfg.model.tiny, cfg.model.vision), "model.tiny"
    config_json = Path(cfg.model.path) / "config.json"
    return architecture(json.loads(config_json.read_text())), f"model.path ({config_json})"


def _corpus_tasks(cfg: RunConfig) -> list[str]:
    """The built-in tasks whose text the tiny VLM's tokenizer is trained on: countdown (the tiny
    model's own corpus), the warm-up's task and the run's built-in tasks."""
    return sorted({BUILTIN, *(t.name for t, _ in warmup_tasks(cfg))})


def warmup_tasks(cfg: RunConfig) -> list[tuple[BuiltinTask, float]]:
    """The built-in tasks whose traces the warm-up writes without ``sft.data``, with their shares: the
    run's built-in tasks (``data.task``, or those of ``data.mix`` in their shares), else the default one."""
    shares = {n: w for n, w in (cfg.data.mix or {cfg.data.task: 1.0}).items() if is_builtin(n)} or {BUILTIN: 1.0}
    total = sum(shares.values())
    return [(get_task(n), w / total) for n, w in shares.items()]


def _warmup_versions(cfg: RunConfig):
    """What the warm checkpoint's key records of the built-in traces (one task: its bare version, as always)."""
    tasks = warmup_tasks(cfg)
    if len(tasks) == 1:
        return tasks[0][0].version
    return [[t.version, w] for t, w in tasks]


def sft_examples(cfg: RunConfig) -> tuple[list[SFTExample], str]:
    """(prompt, response) pairs of ``sft.data`` (any :mod:`longrl.data.sources` source), or built-in
    traces (an image task's are ``(prompt, response, images)`` records: ``longrl.tasks.render.ImageExample``)."""
    if cfg.sft.data:
        from longrl.data.sources import load_sft_examples

        return load_sft_examples(cfg.sft.data, cfg.data), cfg.sft.data
    examples: list = []
    for task, share in warmup_tasks(cfg):
        examples += task.sft_examples(cfg.seed, max(1, round(cfg.sft.examples * share)),
                                      give_up_prob=cfg.sft.give_up_prob, slip_prob=cfg.sft.slip_prob,
                                      order=cfg.sft.search_order)
    return examples, "built-in " + " + ".join(t.name for t, _ in warmup_tasks(cfg)) + " traces"


def make_engine(cfg: RunConfig, model, tokenizer, model_dir: Path | str | None = None):
    """The rollout engine ``rollout.engine`` names, on ``model`` (hf) or on the weights in ``model_dir``."""
    if cfg.rollout.engine == "hf":
        return HFEngine(model, stop_token_ids(tokenizer, model_dir or model, cfg.model.chat_template),
                        tokenizer.pad_token_id,
                        cfg.rollout.max_batch, autocast=autocast_dtype(cfg.model.dtype))
    from longrl.rollout.vllm import VLLMEngine

    if model_dir is None:
        raise ValueError("the vllm engine loads its weights from a model folder; pass model_dir")
    return VLLMEngine(model_dir, stop_token_ids(tokenizer, model_dir, cfg.model.chat_template), seed=cfg.seed,
                      dtype=cfg.model.dtype,
                      max_batch=cfg.rollout.max_batch)


def local_workers(cfg: RunConfig, model, tokenizer, start_dir: Path) -> Workers:
    """The ``local`` backend (:mod:`longrl.train.backends`): engine, scorer and updates in this process."""
    model.to(resolve_device(cfg.model.device))
    if cfg.model.freeze_vision_tower:
        freeze_vision_tower(model)
    if cfg.rl.activation_checkpointing:
        enable_activation_checkpointing(model)  # the update's policy; the engine samples in eval mode, unaffected
    return Workers(make_engine(cfg, model, tokenizer, start_dir), build_router(cfg.rewards))


# ----------------------------------------------------------------------------- the run


class Run:
    """Owns a run directory: config.yaml, metrics.jsonl, eval.jsonl, summary.json, checkpoints/."""

    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool, progress: bool = True):
        self.cfg, self.dir, self.resume, self.progress = cfg, run_dir, resume, progress

    def evaluate(self, trainer, heldout: list[Prompt], iteration: int) -> dict[str, float]:
        from longrl.eval.runner import evaluate

        if not heldout:
            return {}
        t0 = time.perf_counter()
        res = evaluate(trainer.engine, trainer.tokenizer, heldout, trainer.router, n=self.cfg.eval.n_samples,
                       temperature=self.cfg.rollout.temperature, max_new_tokens=self.cfg.rollout.max_length,
                       greedy=self.cfg.eval.greedy, seed=self.cfg.seed,
                       chat_template=self.cfg.model.chat_template, processor=trainer.processor)
        m = res.metrics() | {"eval/time_s": time.perf_counter() - t0}
        with open(self.dir / "eval.jsonl", "a") as f:
            f.write(json.dumps({"iter": iteration, **m, "reasons": res.reasons}) + "\n")
        return m


def train(cfg: RunConfig, resume_dir: Path | None = None, progress: bool = True) -> Path:
    """Run the whole pipeline; returns the run directory."""
    from longrl.logging_backends import MetricsLogger
    from longrl.report import write_report
    from longrl.train.rl import Trainer

    quiet_transformers()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    pool, heldout, rejects = read_prompts(cfg)
    check_tasks(cfg.rewards, {p.task for p in pool} | {p.task for p in heldout})  # every task has a scorer
    if resume_dir is not None:
        run_dir = resume_dir
        last = ckpt.latest_checkpoint(run_dir / "checkpoints")
        start_dir = last if last is not None else warm_model_dir(cfg, progress)
    else:
        name = cfg.name or time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(cfg.out) / name
        if (run_dir / "metrics.jsonl").exists():
            raise UserError(f"{run_dir} already holds a run; use --resume {run_dir} or another run.name")
        last = None
        start_dir = warm_model_dir(cfg, progress)
    model, tok = load_model(start_dir, master_dtype(cfg.model.dtype))  # fp32 master weights under bf16
    check_architecture(model, *expected_architecture(cfg), checkpoint=start_dir)
    processor = load_processor(start_dir)  # a vision-language model's; None for a text-only one
    ctx = context_length(model)
    check_prompt_lengths(tok, pool[:2000], cfg, ctx, "data.task", processor)
    check_prompt_lengths(tok, heldout, cfg, ctx, "held-out set", processor)
    workers = make_workers(cfg, model, tok, start_dir)  # also places the driver's model on its device

    try:
        # Inputs are valid: from here on the run directory is written.
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_dir is None:
            ckpt.write_text_atomic(run_dir / "config.yaml", dump_yaml(cfg))
            for r in rejects:  # data.skip_invalid: the skipped rows, beside the run
                r.write(run_dir / "rejects.jsonl")
                print(f"skipped {len(r)} invalid row(s) of {r.source} (see {run_dir / 'rejects.jsonl'})")
        run = Run(cfg, run_dir, resume_dir is not None, progress)
        trainer = Trainer(cfg, model, tok, workers.engine, pool, workers.router, learner=workers.learner,
                          processor=processor)
        summary: dict = {}
        if last is not None:
            state = ckpt.load_state(last)
            trainer.load_state_dict(state["trainer"], where=str(last))
            ckpt.set_rng_state(state["rng"])
            summary = state.get("summary", {})
            _truncate_jsonl(run_dir / "metrics.jsonl", trainer.iteration)
            _truncate_jsonl(run_dir / "eval.jsonl", trainer.iteration)
            _truncate_jsonl(run_dir / "rollouts.jsonl", trainer.iteration)
        logger = MetricsLogger(run_dir, ["jsonl", *cfg.loggers], config=to_dict(cfg))
    except BaseException:
        workers.close()
        raise
    t_start = time.time()
    try:
        if trainer.iteration == 0 and "initial" not in summary:
            if progress:
                print(f"evaluating the starting policy on {len(heldout)} held-out prompts ...")
            summary["initial"] = run.evaluate(trainer, heldout, 0)
            if progress and summary["initial"]:
                print(_fmt_eval("start", summary["initial"]))
        total = cfg.rl.iterations
        # a sharded trainer group's ranks write their shards into each checkpoint (resumable into any rank count)
        shards = workers.learner.save_shards if getattr(workers.learner, "sharded", False) else None
        bar = tqdm(total=total, initial=trainer.iteration, desc="rl", unit="it", disable=not progress,
                   dynamic_ncols=True)
        last_eval = summary.get("final") or summary.get("initial") or {}
        while trainer.iteration < total:
            m = trainer.step()
            it = trainer.iteration
            if cfg.eval.every and it % cfg.eval.every == 0 and it < total:
                last_eval = run.evaluate(trainer, heldout, it)
                m.update(last_eval)
            if it == total:
                last_eval = run.evaluate(trainer, heldout, it)
                m.update(last_eval)
                summary["final"] = last_eval
            logger.log(m, step=it)
            with open(run_dir / "rollouts.jsonl", "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in trainer.rollout_records())
            nan = float("nan")
            bar.set_postfix(reward=f"{m.get('reward/mean', nan):.2f}", acc=f"{m.get('train/accuracy', nan):.2f}",
                            heldout=f"{last_eval.get('eval/pass1', nan):.3f}",
                            tok_s=f"{m['perf/tokens_per_s']:.0f}", len=f"{m.get('response/len_mean', nan):.0f}")
            bar.update(1)
            if it % cfg.checkpoint.every == 0 or it == total:
                state = {"trainer": trainer.state_dict(), "rng": ckpt.rng_state(), "summary": summary}
                ckpt.save_checkpoint(run_dir / "checkpoints", it, model, tok, state, cfg.checkpoint.keep,
                                     extra={"stage": "rl", "iteration": it, "warm": str(start_dir)},
                                     processor=processor, shards=shards)
        bar.close()
    finally:
        logger.close()
        workers.close()
    summary.update(_summary(summary, cfg, time.time() - t_start))
    ckpt.write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    write_report(run_dir)
    if progress:
        if summary.get("final"):
            print(_fmt_eval("final", summary["final"]))
        print(f"run directory: {run_dir}  (report: {run_dir / 'report.html'})")
    return run_dir


def _summary(summary: dict, cfg: RunConfig, seconds: float) -> dict:
    out = {"iterations": cfg.rl.iterations, "algorithm": cfg.rl.algorithm, "wall_s_this_session": seconds}
    a, b = summary.get("initial", {}), summary.get("final", {})
    for key in ("eval/pass1", "eval/greedy"):
        if key in a and key in b:
            out[f"gain/{key}"] = b[key] - a[key]
    return out


def _fmt_eval(label: str, m: dict) -> str:
    levels = " ".join(f"L{k.rsplit('_', 1)[1]}={v:.3f}" for k, v in m.items() if k.startswith("eval/pass1/level_"))
    return (f"[{label}] held-out pass@1={m.get('eval/pass1', 0):.3f} greedy={m.get('eval/greedy', float('nan')):.3f} "
            f"pass@k={m.get('eval/pass@k', 0):.3f} tokens={m.get('eval/len_mean', 0):.0f} {levels}")


def _truncate_jsonl(path: Path, iteration: int) -> None:
    """Drop lines logged after the checkpoint we resume from (they will be produced again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("iter", 0) <= iteration:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    ckpt.write_text_atomic(path, "".join(x + "\n" for x in keep))
