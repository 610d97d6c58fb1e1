"""Model merging (k1.5 §2.4): average the weights of a long-CoT and a short-CoT model.

    θ_merged = α · θ_long + (1 − α) · θ_short,   tensor by tensor

The two models must have one architecture and one vocabulary (checked field by field, token by
token and tensor by tensor; the error names the first mismatch). k1.5 merges models that descend
from one base checkpoint; when the lineage records (:mod:`longrl.long2short.io`) show no shared
ancestor, the merge still runs but says so.

Averaging is done in float32 and cast back to each tensor's dtype. Non-floating tensors (integer
buffers) are copied and must be equal in both models. Two vision-language models merge every
tensor, vision tower and projector included, and the merged folder gets the long model's
processor; a vision-language model and a text-only one do not merge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from longrl.errors import UserError
from longrl.long2short.io import (
    ancestry,
    check_model_dir,
    check_new_output,
    read_record,
    root_of,
    staged_output,
)
from longrl.models.loading import (
    ARCH_FIELDS,
    architecture,
    is_vision_model,
    load_model,
    load_tokenizer,
    save_model,
)
from longrl.models.vision import load_processor


@dataclass
class MergeReport:
    out: Path
    tensors: int
    shared_root: str | None  # the nearest common ancestor, None when the lineages do not meet
    warnings: list[str] = field(default_factory=list)


def check_architectures(cfg_long: dict, cfg_short: dict, long: str, short: str) -> None:
    """Refuse two configs whose shape-defining fields differ, or a vision-language model with a
    text-only one; name the first such field."""
    if is_vision_model(cfg_long) != is_vision_model(cfg_short):
        kind = {True: "a vision-language model", False: "a text-only model"}
        raise UserError(f"cannot merge {kind[is_vision_model(cfg_long)]} ({long}) with "
                        f"{kind[is_vision_model(cfg_short)]} ({short}): both must have a vision tower or neither")
    a, b = architecture(cfg_long), architecture(cfg_short)
    for k in ARCH_FIELDS:
        if a.get(k) != b.get(k):
            raise UserError(f"cannot merge models of different architectures: first mismatching field "
                            f"{k!r} is {a.get(k)!r} in {long} but {b.get(k)!r} in {short}")


def check_vocabularies(vocab_long: dict[str, int], vocab_short: dict[str, int], long: str, short: str) -> None:
    """Refuse two tokenizers that map any token to different ids; name the first such token."""
    for tok, i in sorted(vocab_long.items(), key=lambda kv: kv[1]):
        if vocab_short.get(tok) != i:
            where = f"id {vocab_short[tok]}" if tok in vocab_short else "absent"
            raise UserError(f"cannot merge models with different vocabularies: token {tok!r} is id {i} "
                            f"in {long} but {where} in {short}")
    extra = sorted(set(vocab_short) - set(vocab_long), key=vocab_short.get)
    if extra:
        raise UserError(f"cannot merge models with different vocabularies: token {extra[0]!r} "
                        f"(id {vocab_short[extra[0]]}) is in {short} but not in {long}")


def merge_state_dicts(long: dict[str, torch.Tensor], short: dict[str, torch.Tensor], alpha: float,
                      names: tuple[str, str] = ("long", "short")) -> dict[str, torch.Tensor]:
    """α · long + (1 − α) · short for every tensor; new tensors, inputs untouched.

    Checked tensor by tensor in ``long``'s order: the first name missing from either side, or the
    first shape or dtype that differs, stops with a :class:`UserError` naming it.
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"--alpha {alpha}: must be in [0, 1] (the weight of the long model)")
    for name in long:
        if name not in short:
            raise UserError(f"cannot merge: tensor {name!r} is in {names[0]} but not in {names[1]}")
    for name in short:
        if name not in long:
            raise UserError(f"cannot merge: tensor {name!r} is in {names[1]} but not in {names[0]}")
    out = {}
    for name, a in long.items():
        b = short[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise UserError(f"cannot merge: first mismatching tensor {name!r} is {a.dtype} "
                            f"{tuple(a.shape)} in {names[0]} but {b.dtype} {tuple(b.shape)} in {names[1]}")
        if a.is_floating_point():
            out[name] = (alpha * a.float() + (1.0 - alpha) * b.float()).to(a.dtype)
        elif torch.equal(a, b):
            out[name] = a.clone()
        else:
            raise UserError(f"cannot merge: non-floating tensor {name!r} differs between {names[0]} and "
                            f"{names[1]}")
    return out


def lineage_warnings(long: Path, short: Path) -> tuple[str | None, list[str]]:
    """(nearest common ancestor or None, warnings) for two model folders."""
    anc_long, anc_short = ancestry(long), ancestry(short)
    common = next((a for a in anc_long if a in set(anc_short)), None)
    if common is not None:
        return common, []
    if not read_record(long) and not read_record(short):
        why = "neither model has a lineage record (longrl.json)"
    else:
        why = f"{long} descends from {root_of(long)}, {short} from {root_of(short)}"
    return None, [(f"the two models do not share a base checkpoint ({why}); k1.5 merges a long- and a "
                   "short-CoT model fine-tuned from one base, and averaging unrelated models rarely works")]


def _saved_dtype(model_dir: Path) -> str:
    cfg = json.loads((model_dir / "config.json").read_text())
    dtype = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


def merge_models(long: str | Path, short: str | Path, out: str | Path, alpha: float = 0.5) -> MergeReport:
    """Average two model folders into ``out`` (Hugging Face format, with the long model's tokenizer,
    and processor for a vision-language model)."""
    long, short = Path(long), Path(short)
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"--alpha {alpha}: must be in [0, 1] (the weight of the long model)")
    check_model_dir(long, "--long")
    check_model_dir(short, "--short")
    check_new_output(out)
    tok_long, tok_short = load_tokenizer(long), load_tokenizer(short)
    cfg_long = json.loads((long / "config.json").read_text())
    cfg_short = json.loads((short / "config.json").read_text())
    check_architectures(cfg_long, cfg_short, str(long), str(short))
    check_vocabularies(tok_long.get_vocab(), tok_short.get_vocab(), str(long), str(short))
    shared, warnings = lineage_warnings(long, short)
    processor = load_processor(long)  # None for a text-only model
    model, _ = load_model(long, _saved_dtype(long))
    other, _ = load_model(short, _saved_dtype(long))
    merged = merge_state_dicts(model.state_dict(), other.state_dict(), alpha, (str(long), str(short)))
    del other
    model.load_state_dict(merged)
    record = {"stage": "merge", "parents": [str(long.resolve()), str(short.resolve())], "alpha": alpha,
              "shared_ancestor": shared, "root": root_of(shared if shared is not None else long)}
    with staged_output(out) as tmp:
        save_model(model, tok_long, tmp, extra=record, processor=processor)
    return MergeReport(Path(out), len(merged), shared, warnings)
