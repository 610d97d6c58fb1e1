"""Held-out evaluation: pass@1 averaged over n samples, pass@k, greedy accuracy, response lengths."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from longrl.rewards import ScoreRouter
from longrl.types import GenRequest, Prompt, SamplingParams


@dataclass
class EvalResult:
    pass1: float  # mean over prompts of (correct samples / n)
    pass_k: float  # share of prompts with at least one correct sample among n
    greedy: float | None
    len_mean: float
    len_median: float
    len_p90: float
    per_level: dict[str, float] = field(default_factory=dict)  # pass@1 per difficulty level
    # pass@1 and mean length per modality ("text", "image") and per task, when the set mixes them
    per_modality: dict[str, dict[str, float]] = field(default_factory=dict)
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # scorer reason counts
    rows: list[dict] = field(default_factory=list)  # one per (prompt, sample) for eval.jsonl
    greedy_rows: list[dict] = field(default_factory=list)  # one per prompt, ``"sample": "greedy"``

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        m = {f"{prefix}/pass1": self.pass1, f"{prefix}/pass@k": self.pass_k,
             f"{prefix}/len_mean": self.len_mean, f"{prefix}/len_p90": self.len_p90}
        if self.greedy is not None:
            m[f"{prefix}/greedy"] = self.greedy
        m.update({f"{prefix}/pass1/level_{k}": v for k, v in self.per_level.items()})
        for kind, groups in (("modality", self.per_modality), ("task", self.per_task)):
            for name, g in groups.items():
                m.update({f"{prefix}/{kind}/{name}/{k}": v for k, v in g.items()})
        return m


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021): 1 − C(n−c, k)/C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def evaluate(engine, tokenizer, prompts: Sequence[Prompt], router: ScoreRouter, *, n: int,
             temperature: float, max_new_tokens: int, greedy: bool = True, seed: int = 0,
             chat_template: bool = False, keep_rows: bool = False, processor=None) -> EvalResult:
    """Sample ``n`` responses per prompt (and one greedy) and score them. ``processor`` is a
    vision-language model's own (:func:`longrl.models.vision.load_processor`): image prompts need it."""
    from longrl.models.vision import encode_prompt_mm

    encoded = [encode_prompt_mm(tokenizer, processor, p, chat_template) for p in prompts]
    reqs = [GenRequest(e.ids, max_new_tokens, seed=_eval_seed(seed, i, j), mm=e.mm, images=p.images)
            for i, (p, e) in enumerate(zip(prompts, encoded)) for j in range(n)]
    results = engine.generate(reqs, SamplingParams(temperature=temperature))
    texts = tokenizer.batch_decode([r.token_ids for r in results], skip_special_tokens=True)
    flat_prompts = [p for p in prompts for _ in range(n)]
    scores = router(flat_prompts, texts)
    correct = np.array([s.correct for s in scores], dtype=float).reshape(len(prompts), n)
    lengths = np.array([len(r.token_ids) for r in results], dtype=float)
    per_level: dict[str, list[float]] = defaultdict(list)
    for p, c in zip(prompts, correct.mean(axis=1)):
        if p.level is not None:
            per_level[str(p.level)].append(float(c))
    reasons: dict[str, int] = defaultdict(int)
    for s in scores:
        reasons[s.reason] += 1
    greedy_acc, greedy_rows = None, []
    if greedy:
        g = engine.generate([GenRequest(e.ids, max_new_tokens, mm=e.mm, images=p.images)
                             for p, e in zip(prompts, encoded)],
                            SamplingParams(temperature=0))
        g_texts = tokenizer.batch_decode([r.token_ids for r in g], skip_special_tokens=True)
        g_scores = router(list(prompts), g_texts)
        greedy_acc = float(np.mean([s.correct for s in g_scores]))
        if keep_rows:
            greedy_rows = [_row(p, "greedy", r, t, s) for p, r, t, s in zip(prompts, g, g_texts, g_scores)]
    rows = []
    if keep_rows:
        rows = [_row(p, i % n, r, t, s) for i, (p, r, t, s) in enumerate(zip(flat_prompts, results, texts, scores))]
    return EvalResult(
        pass1=float(correct.mean()),
        pass_k=float(np.mean([pass_at_k(n, int(c), n) for c in correct.sum(axis=1)])),
        greedy=greedy_acc,
        len_mean=float(lengths.mean()),
        len_median=float(np.median(lengths)),
        len_p90=float(np.percentile(lengths, 90)),
        per_level={k: float(np.mean(v)) for k, v in sorted(per_level.items())},
        per_modality=_breakdown(prompts, correct, lengths, lambda p: "image" if p.images else "text"),
        per_task=_breakdown(prompts, correct, lengths, lambda p: p.task),
        reasons=dict(reasons),
        rows=rows,
        greedy_rows=greedy_rows,
    )


def _breakdown(prompts: Sequence[Prompt], correct: np.ndarray, lengths: np.ndarray, key) -> dict[str, dict[str, float]]:
    """pass@1 and mean response length per value of ``key(prompt)``; empty when all prompts share one."""
    names = [key(p) for p in prompts]
    if len(set(names)) < 2:
        return {}
    lengths = lengths.reshape(correct.shape)
    out = {}
    for name in sorted(set(names)):
        rows = [i for i, k in enumerate(names) if k == name]
        out[name] = {"pass1": float(correct[rows].mean()), "len_mean": float(lengths[rows].mean()),
                     "prompts": len(rows)}
    return out


def _row(p: Prompt, sample: int | str, result, text: str, score) -> dict:
    return {"prompt_id": p.id, "sample": sample, "level": p.level, "response": text,
            "tokens": len(result.token_ids), "stop": result.stop_reason, "reward": score.value,
            "reason": score.reason}


def _eval_seed(seed: int, prompt_index: int, sample: int) -> int:
    return (seed * 1_000_003 + prompt_index) * 64 + sample + (1 << 40)
