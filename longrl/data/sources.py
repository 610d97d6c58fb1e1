"""Prompts and SFT examples from the data users already have: one entry point for every verb.

A **source** is one of

* a file: JSONL (optionally ``.gz``) or Parquet; a bad row is named ``file:line``;
* a dataset folder: one written by ``datasets.Dataset.save_to_disk`` (read with
  ``datasets.load_from_disk``), or a folder of data files (Parquet, JSONL, CSV; read with
  ``datasets.load_dataset``); a bad row is named ``folder[index]``;
* ``hf:NAME``, ``hf:NAME:SPLIT`` or ``hf:NAME:CONFIG:SPLIT``: a Hugging Face dataset through
  ``datasets.load_dataset`` (default split ``train``; a split may be sliced:
  ``hf:openai/gsm8k:main:test[:200]``).
  Its cache and ``HF_DATASETS_OFFLINE`` apply as everywhere in the ``datasets`` library.

A folder holding several splits needs one named: ``hf:FOLDER:SPLIT``.

Every row goes through one converter, whatever the source. A **prompt row** has

* the prompt: a column ``prompt``, ``problem`` or ``question`` (``data.prompt_key`` names another;
  dots reach nested fields), holding text or chat messages ``[{"role", "content"}, ...]`` ending
  with a user turn. Messages become ``Prompt.messages`` (rendered with the model's chat template),
  and ``Prompt.text`` is the last user message;
* the reference: ``reference``, ``answer``, ``solution`` (TRL's name), ``tests``, ``ground_truth``
  or ``reward_model.ground_truth`` (verl), the first present (``data.answer_key`` names another).
  For math a ``solution`` is reduced to its final answer (``#### 42``, the last ``\\boxed{}``);
* optional ``id``, ``task`` (the scorer), ``level`` (3 or "Level 3"), ``difficulty`` (in [0, 1]; from
  ``level`` when absent: level L of n maps to (L-1)/(n-1)), ``pass_rate`` (curation's, in [0, 1])
  and ``tags`` (an object);
* optional ``images`` (verl / EasyR1): the prompt's images, one ``<image>`` placeholder each in the
  prompt, in order; or chat messages whose content lists hold image parts
  (``{"type": "image", "image": ...}``). Paths are relative to the data file's folder; bytes, base64,
  data URIs and ``datasets``' ``{"bytes", "path"}`` work too (:mod:`longrl.data.images`). They
  become ``Prompt.images``, each decoded once to check it; a bad image, a missing file or a
  placeholder count that differs from the image count is a bad row;
* any other column, which travels in ``Prompt.extra`` for reward functions.

**verl's schema** is read as is::

    {"data_source": "openai/gsm8k", "ability": "math",
     "prompt": [{"role": "user", "content": "Natalia sold ..."}],
     "reward_model": {"style": "rule", "ground_truth": "72"},
     "extra_info": {"split": "train", "index": 0}}

``Prompt.extra`` keeps ``data_source``, ``ability``, ``extra_info`` and ``reward_model``'s other
fields; the id is ``id``, else ``extra_info.index``, else ``<file stem>-<line>``.

**The scorer** (``Prompt.task``): the ``task`` column; else what ``ability`` and ``data_source`` name
when they agree (math: ability ``math``, sources such as gsm8k, MATH, AIME, AMC, NuminaMath,
DeepScaleR; code: ability ``code``/``coding``, sources such as APPS, CodeContests, TACO,
LiveCodeBench, HumanEval, MBPP); else ``code`` for a row with a ``tests`` column or
``test`` + ``entry_point``; else ``data.task_default`` (``math``).

**Code references** take the code scorer's format (:mod:`longrl.rewards.sandbox.harness`): an
object ``{"tests": [{"input", "output"}, ...]}`` or ``{"test", "entry_point"}``, a ``tests`` list
(with optional ``time_limit``, ``memory_mb``, ``language``, ``prefix`` columns), or verl/PRIME's
test JSON (a string or object): ``{"inputs": [...], "outputs": [...]}`` becomes stdin/stdout cases,
and ``{"fn_name": f, "inputs": [[args], ...], "outputs": [...]}`` an assert-style test calling the
top-level function ``f`` (a ``class Solution`` method is refused by row: the sandbox calls
functions). LiveCodeBench-style lists of ``{"input", "output", "testtype"}`` are read when every
case is ``stdin``.

An **SFT row** is ``prompt`` + ``response`` (or TRL's ``completion``; ``data.prompt_key`` /
``data.response_key`` name others), the prompt text or chat messages, the completion text or one
assistant message; or TRL's conversational ``messages``, whose last (assistant) turn is the response.
An SFT row may carry images as a prompt row does (the ``images`` column or chat image parts).

Bad rows follow :mod:`longrl.data.rows`: stop naming the first few, or with ``skip_invalid`` skip,
count and write them to ``rejects_path``. :func:`prompt_row` writes a prompt back as a JSONL row that
:func:`load_prompts` reads to an equal :class:`Prompt`.

    >>> import json, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "gsm8k.jsonl")
    >>> row = {"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": "2+2?"}],
    ...        "reward_model": {"style": "rule", "ground_truth": "4"}, "extra_info": {"index": 7}}
    >>> _ = open(path, "w").write(json.dumps(row) + "\\n")
    >>> (p,) = load_prompts(path)
    >>> p.id, p.text, p.reference, p.task, sorted(p.extra)
    ('7', '2+2?', '4', 'math', ['data_source', 'extra_info', 'reward_model'])
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longrl.data import images as img
from longrl.data.rows import Rejects, convert_rows, iter_raw_rows
from longrl.errors import UserError
from longrl.types import Prompt

if TYPE_CHECKING:
    from longrl.config import DataConfig

HF = "hf:"
PROMPT_KEYS = ("prompt", "problem", "question")
REFERENCE_KEYS = ("reference", "answer", "solution", "tests", "ground_truth", "reward_model.ground_truth")
CODE_REFERENCE_KEYS = ("reference", "tests", "ground_truth", "reward_model.ground_truth", "answer")
RESPONSE_KEYS = ("response", "completion")
ROLES = ("system", "developer", "user", "assistant", "tool")
_CODE_FIELDS = ("prefix", "language", "time_limit", "memory_mb")  # columns merged into a `tests` reference
_MATH_SOURCES = ("math", "gsm8k", "aime", "amc", "numina", "deepscaler", "olympiad", "minerva", "dapo")
_CODE_SOURCES = ("code", "apps", "taco", "mbpp", "humaneval", "leetcode", "primeintellect")
_ABILITIES = {"math": "math", "mathematics": "math", "code": "code", "coding": "code", "programming": "code"}
_LEVEL = re.compile(r"^\s*(?:level\s*)?(\d+)\s*$", re.IGNORECASE)

# verl / PRIME compare a call-based result with the expected value, or with its only element
# (APPS stores expected return values wrapped in a one-item list); a tuple reads as a list.
_SAME = '''def _same(got, want):
    if isinstance(got, tuple):
        got = list(got)
    return got == want or (isinstance(want, list) and len(want) == 1 and got == want[0])
'''

Message = dict[str, str]
# (prompt text or chat messages, response), or (prompt, response, images) when the prompt has images
# (one <image> placeholder each, as in a prompt row)
SFTExample = tuple[str | list[Message], str] | tuple[str | list[Message], str, list[bytes]]


# ----------------------------------------------------------------------------- sources


@dataclass
class Source:
    """Rows of one source with what messages and default ids need."""

    name: str  # the file, folder or hf: spec, as messages name it
    stem: str  # default id prefix: <stem>-<line or index>
    unit: str  # "line" (file, from 1) or "index" (dataset, from 0)
    columns: list[str]  # top-level column names, in order
    rows: Iterable[tuple[int, str | None, dict | None]]  # (position, read error or None, row)
    folder: Path | None = None  # where relative image paths point: the file's folder, the dataset folder


def source_name(source: str | Path) -> str:
    """A short name for outputs: the file's stem, the folder's name, the dataset's name and split.

    >>> source_name("data/p.jsonl"), source_name("hf:openai/gsm8k:main:test")
    ('p', 'gsm8k-test')
    """
    s = str(source)
    if s.startswith(HF):
        name, _, split = parse_hf(s)
        return re.sub(r"[^\w.-]+", "_", f"{Path(name).name}-{split}").strip("_")
    return Path(s).name.split(".")[0] or Path(s).name


def parse_hf(spec: str) -> tuple[str, str | None, str]:
    """``hf:NAME[:SPLIT]`` or ``hf:NAME:CONFIG:SPLIT`` -> (name, config, split); split defaults to train.

    >>> parse_hf("hf:openai/gsm8k:main:test[:100]")
    ('openai/gsm8k', 'main', 'test[:100]')
    """
    body = spec[len(HF):]
    head, bracket, tail = body.partition("[")  # a slice such as train[:100] holds a colon
    parts = head.split(":")
    parts[-1] += bracket + tail
    if not parts[0] or len(parts) > 3 or any(not p for p in parts):
        raise UserError(f"{spec!r}: expected hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
    if len(parts) == 1:
        return parts[0], None, "train"
    if len(parts) == 2:
        return parts[0], None, parts[1]
    return parts[0], parts[1], parts[2]


def open_source(source: str | Path) -> Source:
    """The rows of a file, a dataset folder or an ``hf:`` dataset (module docstring)."""
    s = str(source)
    if s.startswith(HF):
        name, config, split = parse_hf(s)
        return _dataset_source(s, _load_hf(s, name, config, split), source_name(s))
    path = Path(s)
    if path.is_dir():
        return _dataset_source(s, _load_folder(path), path.name, path)
    if not path.is_file():
        raise UserError(f"{s}: no such file or folder (a prompt source is a JSONL/Parquet file, a dataset "
                        "folder, or hf:NAME[:SPLIT])")
    rows = list(iter_raw_rows(path))
    columns = list(dict.fromkeys(k for _, _, row in rows if row is not None for k in row))
    return Source(s, path.stem, "line", columns, rows, path.parent)


def _dataset_source(name: str, ds, stem: str, folder: Path | None = None) -> Source:
    def rows() -> Iterator[tuple[int, str | None, dict | None]]:
        for i, row in enumerate(ds):
            yield i, None, row

    return Source(name, stem, "index", list(ds.column_names), rows(), folder)


@contextlib.contextmanager
def _quiet_datasets():
    """No per-split progress bars while reading (the verbs print their own progress)."""
    import datasets

    was_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_off:
            datasets.enable_progress_bars()


def _load_hf(spec: str, name: str, config: str | None, split: str):
    import datasets

    with _quiet_datasets():
        try:
            return datasets.load_dataset(name, config, split=split)
        except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:
            if datasets.config.HF_HUB_OFFLINE and not Path(name).exists():
                raise UserError(f"{spec}: dataset {name!r} is not in the local Hugging Face cache and "
                                "HF_DATASETS_OFFLINE is set, so nothing is downloaded; run once online to "
                                "cache it, or unset HF_DATASETS_OFFLINE") from None
            raise UserError(f"{spec}: could not load dataset {name!r}: {e}") from None


def _load_folder(path: Path):
    """A ``save_to_disk`` folder, else a folder of data files; one split, or the only one there is."""
    import datasets

    with _quiet_datasets():
        try:
            if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
                ds = datasets.load_from_disk(str(path))
            else:
                ds = datasets.load_dataset(str(path))
        except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:
            cause = f"{e}: {e.__cause__}" if e.__cause__ else str(e)
            raise UserError(f"{path}: not a readable dataset folder: {cause}") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise UserError(f"{path} holds the splits {', '.join(ds)}; name one: hf:{path}:SPLIT")
        (ds,) = ds.values()
    return ds


# ----------------------------------------------------------------------------- fields


def get_field(row: dict[str, Any], key: str) -> Any:
    """``row[key]``, dotted keys reaching into nested objects; None when absent."""
    node: Any = row
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _assert_columns(row: dict[str, Any]) -> bool:
    """The code prompt file's assert-style reference: ``test`` + ``entry_point`` columns."""
    return _present(row.get("test")) and _present(row.get("entry_point"))


def _check_key(key: str | None, field_name: str, src: Source) -> None:
    """A mapped column must exist in the source; the message names those that do."""
    if key is not None and key.split(".")[0] not in src.columns:
        raise UserError(f"data.{field_name}={key!r}: {src.name} has no column {key.split('.')[0]!r}; "
                        f"columns: {', '.join(src.columns) or '(none)'}")


def chat_messages(value: Any, what: str) -> list[Message]:
    """Validated chat messages, each reduced to ``{"role", "content"}``; ``ValueError`` names the fault."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{what!r} must be text or a non-empty list of chat messages")
    out = []
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise ValueError(f"{what!r}[{i}] must be a message {{'role': str, 'content': str}}")
        if m["role"] not in ROLES:
            raise ValueError(f"{what!r}[{i}]: unknown role {m['role']!r}; choose from {list(ROLES)}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _prompt_value(value: Any, key: str) -> tuple[str, list[Message] | None]:
    """(text, messages) of a prompt column: text as is, or messages ending with a user turn."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"empty {key!r}")
        return value, None
    messages = chat_messages(value, key)
    if messages[-1]["role"] != "user":
        raise ValueError(f"{key!r}: the last message is a {messages[-1]['role']!r} turn; a prompt ends "
                         "with a user turn")
    if not messages[-1]["content"].strip():
        raise ValueError(f"{key!r}: the last user message is empty")
    return messages[-1]["content"], messages


def task_from_source(ability: Any, data_source: Any) -> str | None:
    """The scorer that verl's ``ability`` and ``data_source`` name, when they name exactly one.

    >>> task_from_source("math", "openai/gsm8k"), task_from_source(None, "codeparrot/apps")
    ('math', 'code')
    >>> task_from_source(None, "my-mixed-set") is None, task_from_source("code", "gsm8k") is None
    (True, True)
    """
    found = set()
    if isinstance(ability, str) and ability.strip().lower() in _ABILITIES:
        found.add(_ABILITIES[ability.strip().lower()])
    if isinstance(data_source, str):
        src = data_source.lower()
        if any(m in src for m in _MATH_SOURCES):
            found.add("math")
        if any(m in src for m in _CODE_SOURCES):
            found.add("code")
    return found.pop() if len(found) == 1 else None


def _level(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    m = _LEVEL.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"'level' must be an integer such as 3 or 'Level 3', got {value!r}")
    return int(m.group(1))


def _unit_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name!r} must be a number in [0, 1], got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- code references


def code_reference(value: Any, prompt_text: str = "") -> dict[str, Any]:
    """The code scorer's reference from any of the formats in the module docstring; ``ValueError`` if none.

    >>> code_reference('{"inputs": ["1 2\\\\n"], "outputs": ["3\\\\n"]}')
    {'tests': [{'input': '1 2\\n', 'output': '3\\n'}]}
    """
    from longrl.rewards.sandbox.harness import parse_reference

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("a code reference must be test cases (JSON object or list), not text") from None
    if isinstance(value, list):
        ref: dict[str, Any] = {"tests": _stdio_cases(value)}
    elif isinstance(value, dict) and ({"inputs", "outputs", "fn_name"} & set(value)):
        ref = _verl_tests(value, prompt_text)
    elif isinstance(value, dict):
        ref = dict(value)
    else:
        raise ValueError(f"a code reference must be test cases (object or list), got {type(value).__name__}")
    parse_reference(ref)  # ValueError says what is wrong; the row loop adds file:line
    return ref


def _stdio_cases(cases: list) -> list[dict[str, str]]:
    out = []
    for i, c in enumerate(cases):
        if not (isinstance(c, dict) and isinstance(c.get("input"), str) and isinstance(c.get("output"), str)):
            raise ValueError(f"tests[{i}] must be {{'input': str, 'output': str}}")
        if c.get("testtype", "stdin") != "stdin":
            raise ValueError(f"tests[{i}] is a {c['testtype']!r} test; a list is read as stdin/stdout cases")
        out.append({"input": c["input"], "output": c["output"]})
    return out


def _verl_tests(d: dict[str, Any], prompt_text: str) -> dict[str, Any]:
    """verl/PRIME test JSON -> stdin/stdout cases, or an assert-style test of ``fn_name``."""
    inputs, outputs, fn = d.get("inputs"), d.get("outputs"), d.get("fn_name")
    if not (isinstance(inputs, list) and isinstance(outputs, list) and 0 < len(inputs) == len(outputs)):
        raise ValueError("tests JSON needs non-empty 'inputs' and 'outputs' lists of equal length")
    if fn is None:
        if not all(isinstance(x, str) for x in inputs + outputs):
            raise ValueError("stdin/stdout tests need text 'inputs' and 'outputs' (call-based: 'fn_name')")
        return {"tests": [{"input": i, "output": o} for i, o in zip(inputs, outputs)]}
    if not isinstance(fn, str) or not fn.isidentifier():
        raise ValueError(f"'fn_name' must be a function name, got {fn!r}")
    if "class Solution" in prompt_text:
        raise ValueError(f"call-based tests of the method Solution.{fn}: the code sandbox calls top-level "
                         "functions only")
    lines = [_SAME, "", "def check(candidate):"]
    for args, want in zip(inputs, outputs):
        args = args if isinstance(args, list) else [args]  # inputs[i] lists the call's arguments
        lines.append(f"    assert _same(candidate(*{args!r}), {want!r})")
    return {"test": "\n".join(lines) + "\n", "entry_point": fn}


# ----------------------------------------------------------------------------- prompt rows


class _PromptRows:
    """``convert(position, row) -> (Prompt, difficulty given?)`` for one source (module docstring)."""

    def __init__(self, src: Source, data: DataConfig):
        _check_key(data.prompt_key, "prompt_key", src)
        _check_key(data.answer_key, "answer_key", src)
        self.src, self.data = src, data
        self.seen: dict[str, int] = {}

    def pick(self, row: dict, mapped: str | None, auto: tuple[str, ...]) -> tuple[str | None, Any]:
        if mapped is not None:
            return mapped, get_field(row, mapped)
        return next(((k, get_field(row, k)) for k in auto if _present(get_field(row, k))), (None, None))

    def task(self, row: dict) -> str:
        if _present(row.get("task")):
            return str(row["task"])
        hinted = task_from_source(row.get("ability"), row.get("data_source"))
        if hinted is not None:
            return hinted
        if self.data.answer_key is None and (_present(row.get("tests")) or _assert_columns(row)):
            return "code"
        return self.data.task_default

    def reference(self, row: dict, task: str, text: str) -> tuple[Any, set[str]]:
        """(reference, the top-level columns it used)."""
        keys = CODE_REFERENCE_KEYS if task == "code" else REFERENCE_KEYS
        key, value = self.pick(row, self.data.answer_key, keys)
        if task == "code" and key is None and _assert_columns(row):
            key, value = "test", {"test": row["test"], "entry_point": row["entry_point"]}
        if key is None or not _present(value):
            also = ", or 'test' + 'entry_point'" if task == "code" else ""
            raise ValueError(f"missing {key!r}" if key else
                             f"missing the reference: one of {', '.join(map(repr, keys))}{also}")
        used = {"test", "entry_point"} if key == "test" else {key}
        if task == "code":
            ref = code_reference(value, text)
            own = {k: row[k] for k in _CODE_FIELDS if row.get(k) is not None}
            if own and key in ("tests", "test") and not isinstance(value, str):  # the code file's own fields
                ref = code_reference({**ref, **own})
                used |= set(own)
            return ref, used
        if task == "math":
            from longrl.rewards.math_extract import reference_answer

            if key.rsplit(".", 1)[-1] == "solution":
                answer = reference_answer(value)  # ValueError names a non-text solution
                if not answer:
                    raise ValueError(f"'solution' {str(value)[:80]!r} holds no final answer")
                return answer, used
            reference_answer(value)  # a list or object is no math answer: named here, not at scoring
        return value, used

    def __call__(self, pos: int, row: dict) -> tuple[Prompt, bool]:
        key, value = self.pick(row, self.data.prompt_key, PROMPT_KEYS)
        if value is None:
            raise ValueError(f"missing {key!r}" if key else
                             f"missing the prompt: one of {', '.join(map(repr, PROMPT_KEYS))}")
        images = img.row_images(row, self.src.folder)
        if img.has_image_parts(value):
            value, inline = img.flatten_image_parts(value, self.src.folder)
            if inline and images:
                raise ValueError(f"images both in {key!r}'s image parts and in the {img.IMAGES_KEY!r} column")
            images = inline or images
        text, messages = _prompt_value(value, key)
        img.check_placeholders(img.count_placeholders(text, messages), len(images))
        task = self.task(row)
        reference, ref_cols = self.reference(row, task, text)
        used = {key, *ref_cols, "task", "level", "pass_rate", img.IMAGES_KEY}
        level = _level(row.get("level"))
        diff = row.get("difficulty")
        given = diff is not None and not isinstance(diff, str)  # a text label ("MEDIUM") travels in extra
        if given:
            used.add("difficulty")
        rate = row.get("pass_rate")
        tags = row.get("tags")
        if isinstance(tags, dict) or tags is None:  # other tags (a list of topics) travel in extra
            used.add("tags")
        if _present(row.get("id")):
            pid = str(row["id"])
            used.add("id")
        elif isinstance(row.get("extra_info"), dict) and row["extra_info"].get("index") is not None:
            pid = str(row["extra_info"]["index"])
        else:
            pid = f"{self.src.stem}-{pos}"
        if pid in self.seen:
            raise ValueError(f"id {pid!r} repeats {self.src.unit} {self.seen[pid]}")
        p = Prompt(id=pid, text=text, reference=reference, task=task,
                   difficulty=_unit_number(diff, "difficulty") if given else 0.0, level=level,
                   pass_rate=None if rate is None else _unit_number(rate, "pass_rate"),
                   tags=dict(tags) if isinstance(tags, dict) else {}, messages=messages,
                   extra=_rest(row, used, key if key and "." in key else None,
                               next((k for k in ref_cols if "." in k), None)),
                   images=images or None)
        self.seen[pid] = pos
        return p, given


def _rest(row: dict, used: set[str], *dotted: str | None) -> dict[str, Any]:
    """The row's other columns; a nested field taken out of an object leaves the object's other fields.

    A null column is an absent one (Parquet and datasets fill a column a row lacks with null).
    """
    out = {k: v for k, v in row.items() if k not in used and v is not None}
    heads = {key.split(".")[0] for key in dotted if key}
    out.update({h: copy.deepcopy(row[h]) for h in heads})  # copies to cut the fields from
    for key in filter(None, dotted):
        head, *path = key.split(".")
        node = out[head]
        for part in path[:-1]:
            node = node[part]
        node.pop(path[-1], None)
    return {k: v for k, v in out.items() if not (k in heads and not v)}


def read_prompts(source: str | Path, data: DataConfig | None = None, *,
                 skip_invalid: bool | None = None) -> tuple[list[Prompt], Rejects]:
    """:func:`load_prompts` that hands back the skipped rows instead of writing them."""
    from longrl.config import DataConfig

    data = data or DataConfig()
    src = open_source(source)
    skip = data.skip_invalid if skip_invalid is None else skip_invalid
    rows, rejects = convert_rows(src.rows, _PromptRows(src, data), source=src.name, unit=src.unit,
                                 skip_invalid=skip)
    levels = sorted({p.level for p, given in rows if p.level is not None and not given})
    if len(levels) > 1:  # level L of n levels -> (L - 1) / (n - 1)  (DESIGN §4)
        rank = {lv: i for i, lv in enumerate(levels)}
        for p, given in rows:
            if p.level is not None and not given:
                p.difficulty = rank[p.level] / (len(levels) - 1)
    return [p for p, _ in rows], rejects


def load_prompts(source: str | Path, data: DataConfig | None = None, *, skip_invalid: bool | None = None,
                 rejects_path: str | Path | None = None) -> list[Prompt]:
    """Every prompt of ``source`` (a file, a dataset folder, or ``hf:NAME[:SPLIT]``; module docstring).

    ``data`` maps columns (``prompt_key``, ``answer_key``) and picks the default scorer
    (``task_default``); ``skip_invalid`` defaults to ``data.skip_invalid``. Skipped rows are
    appended to ``rejects_path`` when given.
    """
    prompts, rejects = read_prompts(source, data, skip_invalid=skip_invalid)
    if rejects_path is not None:
        rejects.write(rejects_path)
    return prompts


BUILTIN = "countdown"  # the default built-in task (longrl.tasks.registry lists them all)


def read_task_prompts(source: str, data: DataConfig | None = None, *, limit: int | None = None, seed: int = 0,
                      field: str = "--in") -> tuple[list[Prompt], Rejects]:
    """A verb's prompts: a prompt source, or a built-in task's name (``limit`` of its training prompts,
    never held-out ones; default 512).

    ``limit`` keeps the first N of a source; an empty result is refused naming ``field``. The
    skipped rows (``data.skip_invalid``) come back for the caller to record.
    """
    from longrl.tasks.registry import get_task, is_builtin, task_names

    if is_builtin(source):
        stream = get_task(source).train_prompts(seed, get_task(source).levels)
        return [next(stream) for _ in range(limit or 512)], Rejects()
    if not source.startswith(HF) and not Path(source).exists():
        raise UserError(f"{field} {source}: no such file or folder (a prompt file, a dataset folder, "
                        f"hf:NAME[:SPLIT], or a built-in task: {', '.join(task_names())})")
    prompts, rejects = read_prompts(source, data)
    if not prompts:
        raise UserError(f"{field} {source}: no prompts")
    return (prompts[:limit] if limit else prompts), rejects


def prompt_row(p: Prompt) -> dict[str, Any]:
    """``p`` as a JSONL row that :func:`load_prompts` reads back to an equal :class:`Prompt`.

    longrl's own columns come first, then ``p.extra``'s; an extra column named like one of
    longrl's (``prompt``, ``reference``, ``id``, ...) is not written, so keep such names out of it.

    >>> prompt_row(Prompt(id="a", text="1+1?", reference="2", task="math", level=2, extra={"src": "x"}))
    {'id': 'a', 'prompt': '1+1?', 'reference': '2', 'task': 'math', 'level': 2, 'difficulty': 0.0, 'src': 'x'}
    """
    row: dict[str, Any] = {"id": p.id, "prompt": p.messages if p.messages is not None else p.text,
                           "reference": p.reference, "task": p.task}
    if p.level is not None:
        row["level"] = p.level
    if not (p.difficulty == 0.0 and isinstance(p.extra.get("difficulty"), str)):  # else keep the text label
        row["difficulty"] = p.difficulty
    if p.pass_rate is not None:
        row["pass_rate"] = p.pass_rate
    if p.tags:
        row["tags"] = p.tags
    if p.images:  # base64 text: a JSONL row holds no bytes
        row[img.IMAGES_KEY] = [img.encode_base64(b) for b in p.images]
    for k, v in p.extra.items():
        row.setdefault(k, v)
    return row


# ----------------------------------------------------------------------------- SFT rows


class _SFTRows:
    def __init__(self, src: Source, data: DataConfig):
        _check_key(data.prompt_key, "prompt_key", src)
        _check_key(data.response_key, "response_key", src)
        self.src, self.data = src, data

    def __call__(self, pos: int, row: dict) -> SFTExample:
        """(prompt, response), or (prompt, response, images) for a row with images (as a prompt row holds them)."""
        images = img.row_images(row, self.src.folder)
        prompt, response = self.text(row, images)
        img.check_placeholders(img.count_placeholders(*((prompt, None) if isinstance(prompt, str) else ("", prompt))),
                               len(images))
        return (prompt, response, images) if images else (prompt, response)

    def text(self, row: dict, images: list[bytes]) -> tuple[str | list[Message], str]:
        """The row's prompt and response; images carried by chat image parts are appended to ``images``."""
        d = self.data

        def flat(value, key: str):
            if not img.has_image_parts(value):
                return value
            value, inline = img.flatten_image_parts(value, self.src.folder)
            if inline and images:
                raise ValueError(f"images both in {key!r}'s image parts and in the {img.IMAGES_KEY!r} column")
            images.extend(inline)
            return value

        if d.prompt_key is None and d.response_key is None and "messages" in row and "prompt" not in row:
            turns = chat_messages(flat(row["messages"], "messages"), "messages")
            if turns[-1]["role"] != "assistant":
                raise ValueError("'messages': the last turn is the response and must be an 'assistant' turn")
            _, prompt = _prompt_value(turns[:-1], "messages") if len(turns) > 1 else (None, None)
            if prompt is None:
                raise ValueError("'messages' needs a user turn before the assistant's response")
            return prompt, _response(turns[-1]["content"], "messages")
        key = d.prompt_key or next((k for k in PROMPT_KEYS if k in row), "prompt")
        value = flat(get_field(row, key), key)
        if value is None:
            raise ValueError(f"missing {key!r}")
        prompt: str | list[Message] = value if isinstance(value, str) else _prompt_value(value, key)[1]
        rkey = d.response_key or next((k for k in RESPONSE_KEYS if k in row), "response")
        value = get_field(row, rkey)
        if isinstance(value, list):  # TRL conversational completion: one assistant message
            turns = chat_messages(value, rkey)
            if len(turns) != 1 or turns[0]["role"] != "assistant":
                raise ValueError(f"{rkey!r} must be text or one assistant message")
            value = turns[0]["content"]
        if not isinstance(value, str):
            raise ValueError(f"missing {rkey!r} text" if value is None else f"{rkey!r} must be text")
        return prompt, _response(value, rkey)


def _response(text: str, key: str) -> str:
    if not text.strip():
        raise ValueError(f"empty {key!r}")
    return text


def load_sft_examples(source: str | Path, data: DataConfig | None = None, *, skip_invalid: bool | None = None,
                      rejects_path: str | Path | None = None) -> list[SFTExample]:
    """(prompt, response) pairs of ``source`` (module docstring); the prompt is text or chat messages."""
    from longrl.config import DataConfig

    data = data or DataConfig()
    src = open_source(source)
    skip = data.skip_invalid if skip_invalid is None else skip_invalid
    rows, _ = convert_rows(src.rows, _SFTRows(src, data), source=src.name, unit=src.unit, skip_invalid=skip,
                           rejects_path=rejects_path)
    if not rows:
        raise UserError(f"{src.name}: no examples")
    return rows
