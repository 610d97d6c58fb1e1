"""Prompt-set curation (``longrl curate``, k1.5 §2.1).

The rule stages are pure functions of prompt lists, with no model calls; each returns a
:class:`StageResult` (kept prompts and one :class:`Drop` per dropped prompt, both in input order):

* :func:`format_filter` (:mod:`.rules`): multiple-choice, true/false and proof prompts;
* :func:`deduplicate` (:mod:`.dedup`): exact and MinHash near duplicates;
* :func:`decontaminate` (:mod:`.decontam`): word n-gram overlap with benchmark sets;
* :func:`cap_tags` (:mod:`.tags`): domain tags and per-tag caps.
"""

from longrl.data.curate.decontam import DecontamResult, NgramIndex, decontaminate
from longrl.data.curate.dedup import deduplicate, normalize_text
from longrl.data.curate.rules import (
    Drop,
    FormatConfig,
    StageResult,
    detect_format,
    format_filter,
    question_of,
)
from longrl.data.curate.tags import TagResult, cap_tags, domain_of, tag_counts, tag_prompts

__all__ = [
    "DecontamResult", "Drop", "FormatConfig", "NgramIndex", "StageResult", "TagResult", "cap_tags",
    "decontaminate", "deduplicate", "detect_format", "domain_of", "format_filter", "normalize_text",
    "question_of", "tag_counts", "tag_prompts",
]
