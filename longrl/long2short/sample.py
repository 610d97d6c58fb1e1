"""Sampling n scored responses per prompt, and the prompt sources long2short accepts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from longrl.data.images import IMAGES_KEY, encode_base64
from longrl.long2short.select import Group
from longrl.types import Prompt, Score

if TYPE_CHECKING:
    from longrl.config import DataConfig

def load_prompts(data: str, limit: int | None = None, seed: int = 0,
                 columns: DataConfig | None = None) -> list[Prompt]:
    """A prompt source (a file, dataset folder or ``hf:NAME[:SPLIT]``, read by :mod:`longrl.data.sources`
    with ``columns``' mapping; bad rows name file and line), or ``countdown``."""
    from longrl.data.sources import read_task_prompts

    return read_task_prompts(data, columns, limit=limit, seed=seed, field="--data")[0]


def sample_groups(model, tokenizer, prompts: Sequence[Prompt], *, n: int, temperature: float,
                  max_new_tokens: int, seed: int = 0, chat_template: bool = False,
                  max_batch: int = 256, rewards=None, processor=None) -> list[Group]:
    """n samples per prompt from ``model``, scored by each prompt's verifier.

    This is the evaluation runner's sample-and-score pass (same seeds, same scorers), kept per
    prompt instead of averaged. ``rewards`` is the run config's rewards section (None: defaults);
    ``processor`` a vision-language model's (:func:`longrl.models.vision.load_processor`), which
    image prompts need.
    """
    from longrl.eval.runner import evaluate
    from longrl.models.loading import stop_token_ids
    from longrl.rewards.compose import build_router
    from longrl.rollout.hf import HFEngine

    engine = HFEngine(model, stop_token_ids(tokenizer, model, chat_template), tokenizer.pad_token_id, max_batch)
    router = build_router(rewards, tasks={p.task for p in prompts})
    try:
        res = evaluate(engine, tokenizer, prompts, router, n=n, temperature=temperature,
                       max_new_tokens=max_new_tokens, greedy=False, seed=seed,
                       chat_template=chat_template, keep_rows=True, processor=processor)
    finally:
        router.close()
    groups = []
    for i, p in enumerate(prompts):
        rows = res.rows[i * n : (i + 1) * n]
        groups.append(Group(p, [r["response"] for r in rows], [r["tokens"] for r in rows],
                            [Score(r["reward"], r["reason"]).correct for r in rows]))
    return groups


def group_rows(groups: Sequence[Group]) -> list[dict]:
    """One audit row per prompt (``samples.jsonl``): every response with its length and verdict, and
    an image prompt's images as base64 (the ``images`` column the prompt loaders read)."""
    rows = []
    for g in groups:
        row = {"prompt_id": g.prompt.id, "prompt": g.prompt.text}
        if g.prompt.images:
            row[IMAGES_KEY] = [encode_base64(b) for b in g.prompt.images]
        rows.append(row | {"responses": g.responses, "tokens": g.lengths, "correct": g.correct})
    return rows
