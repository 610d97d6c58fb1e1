"""Synthetic visual reasoning: procedurally drawn scenes with exactly verifiable questions (k1.5 §2.3.5).

A scene is either shapes (circles, squares, triangles in four colours) or a bar chart (bars A, B, …
with values 1..9 on a gridded axis), drawn as a 96×96 RGB PNG. The generator keeps the scene's
description in the reference (never shown to the model), and every answer is computed from it:

===========  ==================================================  =============================
question     asks                                                answer
===========  ==================================================  =============================
count        How many {colour} {kind}s / {kind}s / {colour}      an integer, 1..4
             shapes are there?
bigger       Which is bigger: the red circle or the blue circle? a shape's name (same kind)
leftmost     Which shape is furthest to the left?                a shape's name
higher       Which is higher up: the A or the B?                 a shape's name
tallest      Which bar is the tallest?                           a bar's letter
bar_value    What is the value of bar C?                         an integer, 1..9
===========  ==================================================  =============================

Difficulty levels (curriculum labels, difficulty (L-1)/(n-1)): more objects, more distractors
(count asks about one attribute at level 1, colour *and* kind at level 3 with objects that share
one of them), closer sizes, closer positions and closer bar values:

=====  =======  =========  ================  ==============  ====  ===============  ===========
level  shapes   size (px)  bigger: ratio     position gap    bars  tallest margin   count asks
=====  =======  =========  ================  ==============  ====  ===============  ===========
1      2-3      18-30      1.8-2.5           ≥ 24 px         3     ≥ 3              kind
2      4-5      14-26      1.4-1.8           ≥ 12 px         4     ≥ 2              kind/colour
3      6-8      12-22      1.2-1.4           ≥ 6 px          5     = 1              both
=====  =======  =========  ================  ==============  ====  ===============  ===========

Each question kind is drawn uniformly, so the chance accuracy of a guesser that knows only the
answer distribution is measured per level (``blank_images`` in :mod:`longrl.tasks.render` is the
control that should fall to it).

The verifier reads the last ``answer X`` line and compares X with the reference after
normalisation (case, spaces, a leading "the", trailing punctuation): reasons ``ok``, ``wrong``,
``no_answer``. The trace writer (:func:`write_trace`) enumerates what is seen, one object a line
(in a random order or a fixed left-to-right scan), with an occasional misreading noticed and
corrected ("wait"), reasons over the list, and answers. As in countdown, a trace's looker may be
impatient (``give_up_prob``): it stops after a few objects and answers from what it saw, which is
often wrong — the headroom RL on the verifier's reward can use.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from longrl.tasks import countdown
from longrl.tasks.render import IMAGE, IMAGE_SIZE, ImageExample, canvas, centered_text, png
from longrl.tasks.splits import HELDOUT_PER_LEVEL, Splits
from longrl.types import Prompt, Score

TASK = "scenes"
GENERATOR_VERSION = "scenes-1"  # bumped whenever scenes, questions, drawings or traces change
LEVELS = (1, 2, 3)
KINDS = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (30, 160, 60), "blue": (40, 80, 230), "yellow": (235, 190, 0)}
QUESTIONS = ("count", "bigger", "leftmost", "higher", "tallest", "bar_value")
BAR_LABELS = "ABCDE"
MAX_BAR = 9
MAX_COUNT = 4
MAX_ANSWER_CHARS = 32  # longer than any shape name: an answer line past it is not an answer


@dataclass(frozen=True)
class LevelSpec:
    shapes: tuple[int, int]  # shapes in a scene, min..max
    size: tuple[int, int]  # a shape's size in px (circle diameter, square / triangle side)
    ratio: tuple[float, float]  # bigger: the larger size over the smaller, min..max
    gap: int  # leftmost / higher: the answer's centre beats every other by at least this, px
    bars: int  # bars in a chart
    margin: int  # tallest: the tallest bar exceeds the next by at least this (level 3: exactly)
    count_by: tuple[str, ...]  # what count questions filter on


_LEVEL_SPEC = {
    1: LevelSpec((2, 3), (18, 30), (1.8, 2.5), 24, 3, 3, ("kind",)),
    2: LevelSpec((4, 5), (14, 26), (1.4, 1.8), 12, 4, 2, ("kind", "colour")),
    3: LevelSpec((6, 8), (12, 22), (1.2, 1.4), 6, 5, 1, ("both",)),
}


def name(shape: dict) -> str:
    return f"{shape['colour']} {shape['kind']}"


# --------------------------------------------------------------------------- scenes and questions


def _place(rng: random.Random, sizes: Sequence[int]) -> list[tuple[int, int]] | None:
    """Centres for shapes of ``sizes``, boxes 3 px apart and inside the image; None if crowded."""
    boxes: list[tuple[int, int, int]] = []
    for s in sizes:
        for _ in range(200):
            half = s // 2
            x, y = rng.randint(half + 2, IMAGE_SIZE - half - 3), rng.randint(half + 2, IMAGE_SIZE - half - 3)
            if all(abs(x - bx) >= (s + bs) // 2 + 3 or abs(y - by) >= (s + bs) // 2 + 3 for bx, by, bs in boxes):
                boxes.append((x, y, s))
                break
        else:
            return None
    return [(x, y) for x, y, _ in boxes]


def _shapes(rng: random.Random, looks: list[tuple[str, str]], sizes: list[int]) -> list[dict] | None:
    """Shapes with the given (colour, kind) looks and sizes, placed at random (None if they do not fit)."""
    centres = _place(rng, sizes)
    return None if centres is None else _as_shapes(looks, centres, sizes)


def _as_shapes(looks: Sequence[tuple[str, str]], centres: Sequence[tuple[int, int]], sizes: Sequence[int]) -> list[dict]:
    return [{"kind": k, "colour": c, "x": x, "y": y, "size": s} for (c, k), (x, y), s in zip(looks, centres, sizes)]


def _random_look(rng: random.Random) -> tuple[str, str]:
    return rng.choice(sorted(COLOURS)), rng.choice(KINDS)


def _count_question(rng: random.Random, spec: LevelSpec) -> tuple[dict, str, dict] | None:
    n = rng.randint(*spec.shapes)
    by = rng.choice(spec.count_by)
    colour, kind = _random_look(rng)
    hits = rng.randint(1, min(MAX_COUNT, n))
    looks = []
    for i in range(n):
        if i < hits:  # a matching shape: the filtered attribute fixed, the other free
            looks.append((colour if by != "kind" else rng.choice(sorted(COLOURS)),
                          kind if by != "colour" else rng.choice(KINDS)))
        elif by == "both":  # a distractor sharing exactly one attribute with the asked look
            looks.append((colour, rng.choice([k for k in KINDS if k != kind])) if rng.random() < 0.5
                         else (rng.choice([c for c in COLOURS if c != colour]), kind))
        elif by == "kind":
            looks.append((rng.choice(sorted(COLOURS)), rng.choice([k for k in KINDS if k != kind])))
        else:
            looks.append((rng.choice([c for c in COLOURS if c != colour]), rng.choice(KINDS)))
    rng.shuffle(looks)
    shapes = _shapes(rng, looks, [rng.randint(*spec.size) for _ in range(n)])
    if shapes is None:
        return None
    ask = {"colour": colour if by != "kind" else None, "kind": kind if by != "colour" else None}
    noun = f"{kind}s" if by == "kind" else (f"{colour} shapes" if by == "colour" else f"{colour} {kind}s")
    return {"shapes": shapes}, f"How many {noun} are there?", ask


def _pair_looks(rng: random.Random, n: int, same_kind: bool) -> list[tuple[str, str]]:
    """``n`` looks whose first two are unique in the scene (and of one kind when ``same_kind``)."""
    a = _random_look(rng)
    b = (rng.choice([c for c in COLOURS if c != a[0]]), a[1]) if same_kind else \
        rng.choice([lk for lk in _all_looks() if lk != a])
    rest = [lk for lk in _all_looks() if lk not in (a, b)]
    return [a, b] + [rng.choice(rest) for _ in range(n - 2)]


def _all_looks() -> list[tuple[str, str]]:
    return [(c, k) for c in sorted(COLOURS) for k in KINDS]


def _bigger_question(rng: random.Random, spec: LevelSpec) -> tuple[dict, str, dict] | None:
    n = max(2, rng.randint(*spec.shapes))
    looks = _pair_looks(rng, n, same_kind=True)
    big = rng.randint(int(10 * spec.ratio[1]) + 1, max(spec.size[1], 34))  # the smaller is >= 10 px
    small = round(big / rng.uniform(*spec.ratio))
    if big / small < spec.ratio[0]:  # rounding took it below the level's ratio
        return None
    pair = [small, big] if rng.random() < 0.5 else [big, small]
    shapes = _shapes(rng, looks, pair + [rng.randint(*spec.size) for _ in range(n - 2)])
    if shapes is None:
        return None
    a, b = name(shapes[0]), name(shapes[1])
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    return {"shapes": _shuffled(rng, shapes)}, f"Which is bigger: the {first} or the {second}?", \
        {"a": first, "b": second}


def _shuffled(rng: random.Random, xs: list) -> list:
    xs = list(xs)
    rng.shuffle(xs)
    return xs


def _leftmost_question(rng: random.Random, spec: LevelSpec) -> tuple[dict, str, dict] | None:
    n = max(2, rng.randint(*spec.shapes))
    looks = _pair_looks(rng, n, same_kind=False)  # looks[0], unique in the scene, goes to the leftmost
    sizes = [rng.randint(*spec.size) for _ in range(n)]
    centres = _place(rng, sizes)
    if centres is None:
        return None
    by_x = sorted(range(n), key=lambda i: centres[i][0])
    if centres[by_x[1]][0] - centres[by_x[0]][0] < spec.gap:
        return None
    looks[0], looks[by_x[0]] = looks[by_x[0]], looks[0]
    return {"shapes": _shuffled(rng, _as_shapes(looks, centres, sizes))}, "Which shape is furthest to the left?", {}


def _higher_question(rng: random.Random, spec: LevelSpec) -> tuple[dict, str, dict] | None:
    n = max(2, rng.randint(*spec.shapes))
    looks = _pair_looks(rng, n, same_kind=False)
    shapes = _shapes(rng, looks, [rng.randint(*spec.size) for _ in range(n)])
    if shapes is None or abs(shapes[0]["y"] - shapes[1]["y"]) < spec.gap:
        return None
    a, b = name(shapes[0]), name(shapes[1])
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    return {"shapes": _shuffled(rng, shapes)}, f"Which is higher up: the {first} or the {second}?", \
        {"a": first, "b": second}


def _bars(rng: random.Random, spec: LevelSpec) -> list[dict]:
    return [{"label": BAR_LABELS[i], "value": rng.randint(1, MAX_BAR)} for i in range(spec.bars)]


def _tallest_question(rng: random.Random, spec: LevelSpec) -> tuple[dict, str, dict] | None:
    bars = _bars(rng, spec)
    top, second = sorted((b["value"] for b in bars), reverse=True)[:2]
    if top - second < spec.margin or (spec.margin == 1 and top - second != 1):
        return None
    return {"bars": bars}, "Which bar is the tallest?", {}


def _bar_value_question(rng: random.Random, spec: LevelSpec) -> tuple[dict, str, dict] | None:
    bars = _bars(rng, spec)
    label = rng.choice(bars)["label"]
    return {"bars": bars}, f"What is the value of bar {label}?", {"bar": label}


_MAKERS = {"count": _count_question, "bigger": _bigger_question, "leftmost": _leftmost_question,
           "higher": _higher_question, "tallest": _tallest_question, "bar_value": _bar_value_question}


def solve(question: str, scene: dict, ask: dict, seen: Sequence[dict] | None = None) -> str:
    """The answer to ``question`` from the objects ``seen`` (default: all of the scene).

    With every object seen this is the true answer; with part of them it is what an impatient
    looker answers (the trace writer's give-up traces).
    """
    objs = list(scene.get("shapes") or scene.get("bars")) if seen is None else list(seen)
    if question == "count":
        return str(sum((ask["colour"] in (None, s["colour"])) and (ask["kind"] in (None, s["kind"])) for s in objs))
    if question in ("bigger", "higher"):
        named = [s for s in objs if name(s) in (ask["a"], ask["b"])]
        if not named:
            return ask["a"]
        best = max(named, key=lambda s: s["size"]) if question == "bigger" else min(named, key=lambda s: s["y"])
        return name(best)
    if question == "leftmost":
        return name(min(objs, key=lambda s: s["x"]))
    if question == "tallest":
        return max(objs, key=lambda b: b["value"])["label"]
    if question == "bar_value":
        found = [b["value"] for b in objs if b["label"] == ask["bar"]]
        return str(found[0]) if found else str((MAX_BAR + 1) // 2)
    raise ValueError(f"unknown question {question!r}")


# --------------------------------------------------------------------------- drawing


def draw_scene(scene: dict) -> bytes:
    """The scene as 96×96 PNG bytes: shapes on white, or a bar chart on a gridded axis."""
    img, draw = canvas()
    for s in scene.get("shapes", ()):
        x, y, h = s["x"], s["y"], s["size"] / 2
        fill = COLOURS[s["colour"]]
        if s["kind"] == "circle":
            draw.ellipse([x - h, y - h, x + h, y + h], fill=fill)
        elif s["kind"] == "square":
            draw.rectangle([x - h, y - h, x + h, y + h], fill=fill)
        else:
            draw.polygon([(x, y - h), (x - h, y + h), (x + h, y + h)], fill=fill)
    if "bars" in scene:
        left, right, bottom, unit = 16, 92, 80, 8  # value 9 reaches y = 8
        for v in range(1, MAX_BAR + 1):
            draw.line([(left, bottom - v * unit), (right, bottom - v * unit)], fill=(215, 215, 215))
        for v in (2, 4, 6, 8):
            centered_text(draw, str(v), 8, bottom - v * unit, 10)
        draw.line([(left, 4), (left, bottom), (right, bottom)], fill=(0, 0, 0))
        slot = (right - left) / len(scene["bars"])
        for i, b in enumerate(scene["bars"]):
            cx = left + slot * (i + 0.5)
            draw.rectangle([cx - slot * 0.3, bottom - b["value"] * unit, cx + slot * 0.3, bottom - 1],
                           fill=COLOURS["blue"])
            centered_text(draw, b["label"], cx, bottom + 8, 11)
    return png(img)


# --------------------------------------------------------------------------- prompts


def make_prompt(rng: random.Random, level: int, pid: str) -> Prompt:
    """One question of a kind drawn uniformly, at ``level`` (scenes are redrawn until they fit)."""
    spec = _LEVEL_SPEC[level]
    question = rng.choice(QUESTIONS)
    made = None
    while made is None:
        made = _MAKERS[question](rng, spec)
    scene, text, ask = made
    return Prompt(
        id=pid,
        text=f"{IMAGE}\n{text}\n",
        reference={"answer": solve(question, scene, ask), "question": question, "ask": ask, "scene": scene},
        task=TASK,
        difficulty=(level - 1) / (len(LEVELS) - 1),
        level=level,
        images=[draw_scene(scene)],
    )


def content_key(p: Prompt) -> str:
    """What makes two prompts the same problem: the question text and the drawn scene."""
    body = json.dumps([p.text, p.reference["scene"]], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


_SPLITS = Splits(TASK, LEVELS, make_prompt, key=content_key)


def train_prompts(seed: int, levels: Sequence[int] = LEVELS) -> Iterator[Prompt]:
    """An unlimited stream of training prompts, level drawn uniformly from ``levels``; held-out problems
    (:func:`heldout_prompts`) are skipped, so they never appear in training."""
    return _SPLITS.train(seed, levels)


def heldout_prompts(n_per_level: int = HELDOUT_PER_LEVEL) -> list[Prompt]:
    """The fixed held-out set: ``n_per_level`` distinct problems of each level, from a fixed seed (a
    smaller set is a per-level prefix of the full one: :class:`longrl.tasks.splits.Splits`)."""
    return _SPLITS.heldout(n_per_level)


# --------------------------------------------------------------------------- trace writer


def _describe(obj: dict, rng: random.Random, slip_prob: float) -> str:
    """One object read out, with (probability ``slip_prob``) a misreading noticed and corrected."""
    if "label" in obj:
        value = f"{obj['value']}"
        if rng.random() < slip_prob:
            wrong = obj["value"] + rng.choice([-1, 1])
            if 1 <= wrong <= MAX_BAR:
                value = f"{wrong} wait {obj['value']}"
        return f"bar {obj['label']} {value}"
    size = f"size {obj['size']}"
    if rng.random() < slip_prob:
        size = f"size {obj['size'] + rng.choice([-4, 4])} wait size {obj['size']}"
    return f"{name(obj)} at {obj['x']},{obj['y']} {size}"


def _reasoning(question: str, ask: dict, seen: Sequence[dict], answer: str) -> str:
    """The line between the list and the answer: what was compared or counted."""
    if question == "count":
        want = " ".join(v for v in (ask["colour"], ask["kind"]) if v) or "shape"
        return f"count {want}: {answer}"
    if question in ("bigger", "higher"):
        key, word = ("size", "bigger") if question == "bigger" else ("y", "higher")
        named = [s for s in seen if name(s) in (ask["a"], ask["b"])]
        return " ".join(f"{name(s)} {key} {s[key]}" for s in named) + f" so {word} {answer}"
    if question == "leftmost":
        return f"smallest x {min(s['x'] for s in seen)} so leftmost {answer}"
    if question == "tallest":
        return f"largest value {max(b['value'] for b in seen)} so tallest {answer}"
    return f"bar {ask['bar']} reads {answer}"


def write_trace(prompt: Prompt, rng: random.Random, *, give_up_prob: float = 0.5, slip_prob: float = 0.05,
                order: str = "random", patience: int | None = None) -> str:
    """A worked answer ending with ``answer X``: look (one object a line), reason, answer.

    ``order="fixed"`` reads shapes left to right (bars A, B, …), ``"random"`` in a random order.
    The looker reads every object, or (probability ``give_up_prob``, or a given ``patience``)
    only the first few, then says ``stop looking`` and answers from those.

    >>> p = heldout_prompts(1)[0]
    >>> verify(write_trace(p, random.Random(0), give_up_prob=0), p.reference).reason
    'ok'
    """
    if order not in countdown.SEARCH_ORDERS:
        raise ValueError(f"order={order!r}: choose from {countdown.SEARCH_ORDERS}")
    ref = prompt.reference
    scene, question, ask = ref["scene"], ref["question"], ref["ask"]
    objs = list(scene.get("shapes") or scene.get("bars"))
    if order == "random":
        rng.shuffle(objs)
    else:
        objs.sort(key=lambda o: (o["x"], o["y"]) if "x" in o else o["label"])
    if patience is not None:
        if patience < 1:
            raise ValueError(f"patience={patience}: a looker reads at least one object")
    elif rng.random() < give_up_prob:
        patience = rng.randint(1, max(1, len(objs) - 1))
    else:
        patience = len(objs)
    seen = objs[:patience]
    what = "shapes" if "shapes" in scene else "bars"
    lines = [f"look {len(objs)} {what}"] + [_describe(o, rng, slip_prob) for o in seen]
    if len(seen) < len(objs):
        lines.append("stop looking")
    answer = solve(question, scene, ask, seen)
    lines += [_reasoning(question, ask, seen, answer), f"answer {answer}"]
    return "\n".join(lines)


def sft_examples(seed: int, n: int, *, give_up_prob: float = 0.5, slip_prob: float = 0.05,
                 levels: Sequence[int] = LEVELS, order: str = "random") -> list[ImageExample]:
    """``n`` warm-up examples (prompt text, trace, image) from training prompts only."""
    rng = random.Random(f"scenes-sft-{seed}")
    out = []
    for p in train_prompts(seed + 10_000, levels):
        out.append(ImageExample(p.text, write_trace(p, rng, give_up_prob=give_up_prob, slip_prob=slip_prob,
                                                    order=order), list(p.images or [])))
        if len(out) == n:
            return out
    raise AssertionError("unreachable: train_prompts is unlimited")


# --------------------------------------------------------------------------- verifier

_ANSWER = re.compile(r"^answer[ \t]+(.+?)[ \t]*$", re.MULTILINE)


def normalise(answer: str) -> str:
    """Case, runs of spaces, a leading "the" and trailing punctuation do not matter.

    >>> normalise("  The Red   Circle. ")
    'red circle'
    """
    words = answer.strip().rstrip(".!").lower().split()
    if words[:1] == ["the"]:
        words = words[1:]
    return " ".join(words)


def verify(response: str, reference: dict) -> Score:
    """1 if the last ``answer X`` line's X equals the reference answer after :func:`normalise`.

    Reasons: ``ok``, ``wrong``, ``no_answer``.
    """
    found = _ANSWER.findall(response)
    if not found:
        return Score(0.0, "no_answer")
    given = found[-1][:MAX_ANSWER_CHARS + 1]
    if len(given) <= MAX_ANSWER_CHARS and normalise(given) == normalise(reference["answer"]):
        return Score(1.0, "ok", {"answer": given})
    return Score(0.0, "wrong", {"answer": given[:MAX_ANSWER_CHARS]})


class ScenesScorer:
    """The scenes task's scorer: a pure function of response and reference (DESIGN §6).

    >>> p = heldout_prompts(1)[0]
    >>> ScenesScorer()([p], ["look\\nanswer " + p.reference["answer"].upper()])[0].reason
    'ok'
    """

    def __init__(self, **options):
        if options:
            raise ValueError(f"scenes scorer takes no options, got {sorted(options)}")

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Score]:
        return [verify(r, p.reference) for p, r in zip(prompts, responses)]
