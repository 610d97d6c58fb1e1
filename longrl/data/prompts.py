"""Prompt files and SFT files: the earlier names of :mod:`longrl.data.sources`' loaders.

Every format :mod:`longrl.data.sources` reads is accepted here too (JSONL, Parquet, dataset
folders, ``hf:`` datasets; text or chat-message prompts; verl's schema).
"""

from __future__ import annotations

from pathlib import Path

from longrl.data.sources import SFTExample, load_prompts, load_sft_examples
from longrl.types import Prompt


def load_prompt_file(path: str | Path, *, default_task: str = "math", skip_invalid: bool = False,
                     rejects_path: Path | None = None) -> list[Prompt]:
    """:func:`~longrl.data.sources.load_prompts` with ``data.task_default=default_task``."""
    from longrl.config import DataConfig

    return load_prompts(path, DataConfig(task_default=default_task), skip_invalid=skip_invalid,
                        rejects_path=rejects_path)


def load_sft_file(path: str | Path, *, skip_invalid: bool = False, rejects_path: Path | None = None
                  ) -> list[SFTExample]:
    """:func:`~longrl.data.sources.load_sft_examples` with the default column mapping."""
    return load_sft_examples(path, skip_invalid=skip_invalid, rejects_path=rejects_path)
