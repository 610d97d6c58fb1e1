"""``longrl rewards check [CONFIG] [--set ...] --data PROMPTS [--responses FILE]``: a dry run of the rewards.

Scores responses with the config's ``rewards`` section, exactly as training would (the same
:func:`~longrl.rewards.compose.build_router`), and prints the mean reward, each reward term and the
table of reasons — before a long run finds out that a custom function returns strings. The
responses come from ``--responses`` (JSONL rows with the prompt's ``id`` — or ``prompt_id``, as
``longrl eval`` writes them — and a ``response``), or else are sampled from ``model.path``.
Nothing is written.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path


def add_arguments(p) -> None:
    from longrl.config import add_config_arguments

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("check", help="score responses with the configured rewards and print the reasons",
                       description="Score responses with the config's rewards section, as training would, and "
                       "print the mean reward, each reward term and the reasons. Nothing is written.")
    add_config_arguments(c)
    c.add_argument("--data", help="the prompts: a JSONL/Parquet file, a dataset folder, hf:NAME[:SPLIT], or "
                   "a built-in task (its held-out set); default: the config's data.task")
    c.add_argument("--responses", help="JSONL of {id (or prompt_id), response} rows to score; without it, "
                   "responses are sampled from model.path")
    c.add_argument("--n", type=int, default=1, help="without --responses: samples per prompt (default 1)")
    c.add_argument("--limit", type=int, help="use the first N prompts")


def run(args) -> int:
    from longrl.config import load_config
    from longrl.errors import UserError
    from longrl.rewards.compose import build_router, term_metrics, total_reward

    cfg = load_config(args.config, args.overrides)
    if args.n < 1 or (args.limit is not None and args.limit < 1):
        raise UserError("--n and --limit must be at least 1")
    prompts = _prompts(args.data or cfg.data.task, cfg, args.limit)
    rows = (_read_responses(Path(args.responses), {p.id: p for p in prompts}, cfg.data.skip_invalid)
            if args.responses else None)
    used = prompts if rows is None else list({p.id: p for p, _ in rows}.values())
    router = build_router(cfg.rewards, tasks={p.task for p in used})
    try:
        if rows is None:
            rows = _sample(cfg, prompts, args.n)
        t0 = time.perf_counter()
        scores = router([p for p, _ in rows], [r for _, r in rows])
        seconds = time.perf_counter() - t0
    finally:
        router.close()
    if not scores:
        raise UserError("no responses to score")
    n = len(scores)
    print(f"{n} responses to {len(used)} prompts, scored in {seconds:.2f} s ({n / max(seconds, 1e-9):.0f} responses/s)")
    lines = [("reward (total, before the length term)", sum(map(total_reward, scores)) / n),
             ("correct (task reward >= 1)", sum(s.correct for s in scores) / n)]
    lines += [(k.replace("reward/term/", "term "), v) for k, v in term_metrics(scores).items()
              if k.startswith("reward/term/")]
    for task, count in sorted(Counter(p.task for p, _ in rows).items()):
        if len({p.task for p, _ in rows}) > 1:
            lines.append((f"task reward, {task} ({count})",
                          sum(s.value for (p, _), s in zip(rows, scores) if p.task == task) / count))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"  {k:<{width}}  {v:.4f}")
    _table("reasons", Counter(s.reason for s in scores), n)
    terms = Counter(f"{name}: {reason}" for s in scores for name, reason in s.parts.get("term_reasons", {}).items())
    if terms:
        _table("reward-term reasons other than ok", terms, n)
    return 0


def _table(title: str, counts: Counter, n: int) -> None:
    width = max(len(k) for k in counts)
    print(f"{title}:")
    for k, c in counts.most_common():
        print(f"  {k:<{width}}  {c:>7}  {100 * c / n:5.1f}%")


def _prompts(data: str, cfg, limit: int | None) -> list:
    from longrl.errors import UserError
    from longrl.tasks.registry import get_task, is_builtin

    if is_builtin(data):
        prompts = get_task(data).heldout_prompts(cfg.data.heldout_per_level)
    else:
        from longrl.data.sources import load_prompts

        prompts = load_prompts(data, cfg.data)
    if not prompts:
        raise UserError(f"--data {data}: no prompts")
    return prompts[:limit] if limit else prompts


def _read_responses(path: Path, by_id: dict, skip_invalid: bool) -> list:
    """(prompt, response) per row; a row without a known id or a string response stops with file:line
    (or, with ``data.skip_invalid``, is skipped and counted)."""
    from longrl.data.rows import load_rows

    def convert(line: int, row: dict):
        pid = row.get("id", row.get("prompt_id"))
        if pid is None or not isinstance(row.get("response"), str):
            raise ValueError("needs the prompt's 'id' (or 'prompt_id') and a string 'response'")
        if str(pid) not in by_id:
            raise ValueError(f"no prompt with id {pid!r} in --data")
        return by_id[str(pid)], row["response"]

    rows, rejects = load_rows(path, convert, skip_invalid=skip_invalid)
    if len(rejects):
        print(f"{len(rejects)} row(s) of {path} skipped (data.skip_invalid): the first, line "
              f"{rejects.rows[0][0]}: {rejects.rows[0][1]}")
    return rows


def _sample(cfg, prompts: list, n: int) -> list:
    from longrl.errors import UserError
    from longrl.models.loading import quiet_transformers
    from longrl.rollout.text import open_engine, sample_responses
    from longrl.types import SamplingParams

    if cfg.model.path is None:
        raise UserError("model.path is not set: give --responses FILE, or --set model.path=DIR to sample responses")
    quiet_transformers()
    te = open_engine(cfg.model.path, engine=cfg.rollout.engine, dtype=cfg.model.dtype,
                     chat_template=cfg.model.chat_template, seed=cfg.seed, field="model.path")
    try:
        out = sample_responses(te, prompts, n=n, max_new_tokens=cfg.rollout.max_length,
                               params=SamplingParams(temperature=cfg.rollout.temperature), seed=cfg.seed)
    finally:
        te.close()
    return [(p, r.text) for p, group in zip(prompts, out) for r in group]
