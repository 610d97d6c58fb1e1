"""The benchmark sets shipped inside the package: files, row counts, wheel globs, README, eval --list."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

from longrl.cli import main
from longrl.data.benchmarks import BENCHMARKS, SHIPPED_DIR, benchmark_file, markdown_table
from longrl.errors import UserError
from longrl.eval.benchmarks import benchmark_names, benchmark_table, load_benchmark

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "longrl"
ROWS = {"math500": 500, "aime24": 30, "amc23": 40, "gsm8k": 1319, "minerva_math": 272, "humaneval": 164}


def test_the_table_names_the_six_sets_with_their_documented_sizes():
    assert {name: b.rows for name, b in BENCHMARKS.items()} == ROWS
    assert benchmark_names() == sorted([*ROWS, "countdown", "countdown_image", "scenes"])


@pytest.mark.parametrize("name", sorted(ROWS))
def test_each_shipped_set_loads_with_its_row_count_and_unique_ids(name):
    path = benchmark_file(name)
    assert path.parent == SHIPPED_DIR and SHIPPED_DIR.is_relative_to(PACKAGE)
    prompts = load_benchmark(name)
    assert len(prompts) == ROWS[name] and len({p.id for p in prompts}) == ROWS[name]
    assert {p.task for p in prompts} == {BENCHMARKS[name].task}


def test_data_dir_overrides_and_names_the_missing_file(tmp_path):
    (tmp_path / "amc23.jsonl").write_text('{"id": 3, "question": "1+2?", "answer": 3.0}\n')
    assert [(p.id, p.reference) for p in load_benchmark("amc23", tmp_path)] == [("amc23:3", "3")]
    with pytest.raises(UserError, match=r"gsm8k\.jsonl not found; --data-dir must hold gsm8k\.jsonl"):
        load_benchmark("gsm8k", tmp_path)
    with pytest.raises(UserError, match="unknown benchmark 'nope'"):
        benchmark_file("nope")


def test_package_data_globs_cover_every_shipped_file():
    """A non-editable install carries only what pyproject's package-data matches (no build here)."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["longrl"]
    carried = {p for g in globs for p in PACKAGE.glob(g)}
    on_disk = {p for p in SHIPPED_DIR.iterdir() if p.is_file() and p.suffix != ".py"}
    assert {SHIPPED_DIR / b.file for b in BENCHMARKS.values()} | {SHIPPED_DIR / "README.md"} == on_disk
    assert on_disk <= carried


def test_readme_table_is_the_metadata_table():
    assert markdown_table() in (SHIPPED_DIR / "README.md").read_text()


def test_eval_list_prints_every_benchmark_without_a_model(capsys):
    assert main(["eval", "--list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {*ROWS, "countdown", "countdown_image", "scenes"}
    for name, n in ROWS.items():
        assert lines[name].split()[1:3] == [str(n), BENCHMARKS[name].task]
        assert BENCHMARKS[name].source in lines[name] and lines[name].endswith(BENCHMARKS[name].licence)
    countdown = next(r for r in benchmark_table() if r["name"] == "countdown")
    assert lines["countdown"].split()[1] == str(countdown["prompts"]) == str(len(load_benchmark("countdown")))


def test_eval_without_model_or_list_is_one_clear_error(capsys):
    assert main(["eval", "--bench", "math500"]) == 2
    assert capsys.readouterr().err.strip() == "error: --model DIR is required (only --list runs without a model)"


def test_product_code_reads_no_folder_outside_the_package():
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "bench").rglob("*.py")]:
        text = path.read_text()
        assert "LONGRL_SHARED_DATA" not in text and "shared/data" not in text, path


@pytest.mark.parametrize(
    "module", ["longrl.data.benchmarks", "longrl.data.math", "longrl.data.humaneval", "longrl.eval.benchmarks"]
)
def test_docstring_examples_run(module):
    res = doctest.testmod(importlib.import_module(module), verbose=False)
    assert res.attempted >= 1 and res.failed == 0
