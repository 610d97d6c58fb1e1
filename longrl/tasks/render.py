"""Text-rendered visual task: the built-in countdown problems drawn as images (k1.5 §2.3.5).

k1.5's vision RL data includes *text-rendered* problems: a text problem shown as a picture, so the
model must read it from pixels. Here the problem is a countdown problem
(:mod:`longrl.tasks.countdown`): the prompt text carries the instruction and one ``<image>``
placeholder but not the numbers; a 96×96 RGB PNG shows the three numbers above a rule and the
target below it. The reference is countdown's, so countdown's verifier grades the answer, and the
held-out set is countdown's held-out set drawn: ``countdown_image-heldout-L-i`` is the picture of
``countdown-heldout-L-i``, so text and image accuracy are measured on the same problems.

The warm-up traces are countdown's, preceded by a transcription line that reads the image out
("I read the numbers 3 5 7 and the target 15."): SFT teaches reading, then reasoning.

This module also holds what the visual tasks share: PNG encoding (deterministic bytes: no
timestamps or metadata), the font, the background and the blank-image control.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from functools import cache
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

from longrl.tasks import countdown
from longrl.types import Prompt

TASK = "countdown_image"
# Bumped whenever the drawing, the prompt text or the traces change (warm checkpoints key on it);
# countdown's own version is part of it because the problems are countdown's.
GENERATOR_VERSION = f"{TASK}-2+countdown-{countdown.GENERATOR_VERSION}"
LEVELS = countdown.LEVELS
IMAGE_SIZE = 96  # pixels per side: the built-in tiny VLM's TinyVLMConfig.image_size
BACKGROUND = (255, 255, 255)  # every built-in visual task draws on white
INK = (0, 0, 0)
IMAGE = "<image>"  # the placeholder one image takes in Prompt.text (verl / EasyR1 convention)
PROMPT_TEXT = f"{IMAGE}\nUse the numbers above the line to make the number below it.\n"


class ImageExample(NamedTuple):
    """One SFT warm-up example of a visual task: ``prompt`` holds one ``<image>`` per entry of
    ``images`` (PNG bytes). Created by the visual tasks' ``sft_examples``; read by the SFT encoder."""

    prompt: str
    response: str
    images: list[bytes]


@cache
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font (Aileron, embedded in Pillow ≥ 10): the same on every machine."""
    return ImageFont.load_default(size=size)


def canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    return img, ImageDraw.Draw(img)


def png(img: Image.Image) -> bytes:
    """PNG bytes of ``img``: no metadata, fixed compression, so the same drawing gives the same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def centered_text(draw: ImageDraw.ImageDraw, text: str, cx: float, cy: float, size: int, bold: bool = False) -> None:
    """Draw ``text`` with its ink box centred on (cx, cy); ``bold`` adds a one-pixel stroke."""
    draw.text((cx, cy), text, fill=INK, font=font(size), anchor="mm", stroke_width=int(bold), stroke_fill=INK)


def blank_images(prompts: Sequence[Prompt]) -> list[Prompt]:
    """Copies of ``prompts`` whose every image is a blank one of the same size, in :data:`BACKGROUND`.

    The control that proves the pixels are used: a model scored on these should fall to the
    accuracy of guessing the answer distribution (see each task's levels). Text-only prompts are
    returned unchanged.
    """
    out = []
    for p in prompts:
        if not p.images:
            out.append(p)
            continue
        blanks = []
        for data in p.images:
            with Image.open(io.BytesIO(data)) as im:
                blanks.append(png(Image.new("RGB", im.size, BACKGROUND)))
        out.append(replace(p, images=blanks, tags={**p.tags, "blank_images": True}))
    return out


# --------------------------------------------------------------------------- countdown as an image


def draw_countdown(numbers: Sequence[int], target: int) -> bytes:
    """The three numbers in a row above a rule, the target below it, as 96×96 PNG bytes.

    Bold digits about 22 px tall (font size 30, one-pixel stroke), each number centred in its own
    32-pixel column, so a number falls on the same 16-pixel patches whatever it is: the tiny VLM
    learned to read these more than twice as fast as thin digits placed freely (0.44 against 0.17
    of held-out digits after 800 steps of 32 transcriptions).
    """
    img, draw = canvas()
    for i, n in enumerate(numbers):
        centered_text(draw, str(n), 16 + 32 * i, 18, 30, bold=True)
    draw.line([(8, 40), (IMAGE_SIZE - 8, 40)], fill=INK, width=2)
    centered_text(draw, str(target), IMAGE_SIZE / 2, 66, 34, bold=True)
    return png(img)


def _image_prompt(p: Prompt) -> Prompt:
    """Countdown prompt ``p`` drawn: same problem, level, difficulty and id suffix."""
    ref = p.reference
    return replace(p, id=TASK + p.id[len(countdown.TASK):], text=PROMPT_TEXT, task=TASK,
                   images=[draw_countdown(ref["numbers"], ref["target"])], tags=dict(p.tags))


def train_prompts(seed: int, levels: Sequence[int] = LEVELS) -> Iterator[Prompt]:
    """Countdown's training stream drawn (held-out problems are already skipped there)."""
    for p in countdown.train_prompts(seed, levels):
        yield _image_prompt(p)


def heldout_prompts(n_per_level: int = 150) -> list[Prompt]:
    """Countdown's held-out set drawn, in the same order, ids mapped 1:1 (``countdown-heldout-L-i``
    -> ``countdown_image-heldout-L-i``)."""
    return [_image_prompt(p) for p in countdown.heldout_prompts(n_per_level)]


def reading_examples(prompts: Iterable[Prompt]) -> tuple[list[bytes], list[list[int]]]:
    """Countdown ``prompts`` drawn, with their digits, for pretraining a vision tower to read
    (:func:`longrl.models.vision.pretrain_tower`): each label is the three numbers' digits and the
    target's two (countdown's numbers are 1–9, its targets 10–99), left to right."""
    images, labels = [], []
    for p in prompts:
        numbers, target = p.reference["numbers"], p.reference["target"]
        images.append(draw_countdown(numbers, target))
        labels.append([*numbers, target // 10, target % 10])
    return images, labels


def transcription(numbers: Sequence[int], target: int) -> str:
    """The first line of every trace: what the image shows, read out."""
    return f"I read the numbers {' '.join(map(str, numbers))} and the target {target}."


def sft_examples(seed: int, n: int, *, give_up_prob: float = 0.5, slip_prob: float = 0.05,
                 short: bool = False, levels: Sequence[int] = LEVELS, order: str = "random"
                 ) -> list[ImageExample]:
    """``n`` warm-up examples from training prompts: countdown's traces (same options, same draws as
    :func:`longrl.tasks.countdown.sft_examples`) after a transcription line."""
    rng = random.Random(f"countdown-sft-{seed}")
    out = []
    for p in countdown.train_prompts(seed + 10_000, levels):
        ref = p.reference
        trace = countdown.write_trace(ref["numbers"], ref["target"], rng, give_up_prob=give_up_prob,
                                      slip_prob=slip_prob, short=short, order=order)
        out.append(ImageExample(PROMPT_TEXT, transcription(ref["numbers"], ref["target"]) + "\n" + trace,
                                [draw_countdown(ref["numbers"], ref["target"])]))
        if len(out) == n:
            return out
    raise AssertionError("unreachable: train_prompts is unlimited")
