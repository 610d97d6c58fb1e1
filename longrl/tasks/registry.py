"""The built-in tasks by name: what ``data.task``, ``longrl eval --bench``, ``--in`` / ``--data`` and
the warm-up look up instead of special-casing one task.

    >>> task_names()
    ['countdown', 'countdown_image', 'scenes']
    >>> get_task("scenes").modality, get_task("scenes").levels
    ('image', (1, 2, 3))

Each task's scorer is registered under the same name in :mod:`longrl.rewards` (``countdown_image``
is graded by countdown's scorer: its references are countdown's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from longrl.tasks import countdown, render, scenes
from longrl.types import Prompt


@dataclass(frozen=True)
class BuiltinTask:
    """One built-in task. Created here; read by the trainer (pool, held-out set, warm-up traces and
    the warm checkpoint's key), ``longrl eval`` (held-out set), the prompt-source readers and the
    tiny model's tokenizer (``corpus``)."""

    name: str  # the task name: data.task, the prompts' ``task`` (their scorer) and the benchmark name
    levels: tuple[int, ...]  # the difficulty labels data.levels may pick from
    version: str | int  # generator version: warm checkpoints are keyed on it, so a change retrains the warm-up
    # (countdown's is its bare integer, the key its warm checkpoints have always had)
    modality: Literal["text", "image"]  # image: every prompt has one <image> and one PNG in Prompt.images
    source: str  # where the problems come from, for ``longrl eval --list``
    train_prompts: Callable[[int, Sequence[int]], Iterator[Prompt]]  # (seed, levels) -> unlimited stream
    heldout_prompts: Callable[[int], list[Prompt]]  # (n_per_level) -> the fixed held-out set
    # (seed, n, *, give_up_prob, slip_prob, levels, order) -> n warm-up examples from training prompts:
    # (prompt, response) pairs for text tasks, render.ImageExample (prompt, response, images) for image ones
    sft_examples: Callable[..., list[Any]]

    def corpus(self, n: int = 4000, seed: int = 0) -> list[str]:
        """Text for training a tokenizer: ``n`` warm-up prompts with their responses."""
        return [ex[0] + ex[1] for ex in self.sft_examples(seed, n)]


_TASKS = {
    t.name: t
    for t in (
        BuiltinTask(countdown.TASK, countdown.LEVELS, countdown.GENERATOR_VERSION, "text",
                    "built in: longrl/tasks/countdown.py, a fixed seed", countdown.train_prompts,
                    countdown.heldout_prompts, countdown.sft_examples),
        BuiltinTask(render.TASK, render.LEVELS, render.GENERATOR_VERSION, "image",
                    "built in: countdown's held-out set drawn (longrl/tasks/render.py)", render.train_prompts,
                    render.heldout_prompts, render.sft_examples),
        BuiltinTask(scenes.TASK, scenes.LEVELS, scenes.GENERATOR_VERSION, "image",
                    "built in: longrl/tasks/scenes.py, a fixed seed", scenes.train_prompts,
                    scenes.heldout_prompts, scenes.sft_examples),
    )
}


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> BuiltinTask:
    """The built-in task called ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in _TASKS:
        raise ValueError(f"unknown built-in task {name!r}; choose from {task_names()}")
    return _TASKS[name]


def is_builtin(source: str) -> bool:
    """Whether ``source`` (a data.task or an ``--in`` value) names a built-in task rather than a path.

    A file or folder of that name in the working directory wins, as it always has for ``countdown``.
    """
    return source in _TASKS and not Path(source).exists()
