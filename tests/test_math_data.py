"""Math prompt files and benchmark loaders."""

import json

import pytest

from longrl.data.math import (
    INSTRUCTION,
    MATH_BENCHMARKS,
    load_math_benchmark,
    load_math_file,
)
from longrl.errors import UserError


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_load_math_file_fields_ids_and_levels(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"problem": "What is 2+2?", "answer": "4", "level": 1},
            {"question": "Half of 1?", "answer": 0.5, "level": "Level 3"},
            {"problem": "GSM", "answer": "so 9 * 2 = 18\n#### 1,018", "id": "g-1"},
            {"problem": "Hard", "answer": "\\frac{1}{3}", "level": 5, "difficulty": 0.9},
        ],
    )
    ps = load_math_file(path)
    assert [p.id for p in ps] == ["train:1", "train:2", "g-1", "train:4"]
    assert [p.reference for p in ps] == ["4", "0.5", "1018", "\\frac{1}{3}"]
    assert {p.task for p in ps} == {"math"}
    assert ps[0].text == "What is 2+2?\n\n" + INSTRUCTION and ps[0].tags["problem"] == "What is 2+2?"
    # Levels 1..5 in this file: (L-1)/(n-1); an explicit difficulty wins over the level.
    assert [(p.level, p.difficulty) for p in ps] == [(1, 0.0), (3, 0.5), (None, 0.0), (5, 0.9)]


def test_row_without_answer_stops_naming_file_and_line(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"problem": "ok", "answer": "1"},
            {"problem": "no answer here"},
            {"problem": "empty", "answer": "  "},
        ],
    )
    with pytest.raises(UserError) as e:
        load_math_file(path)
    msg = str(e.value)
    assert f"{path}:2:" in msg and f"{path}:3:" in msg and "answer" in msg and "skip_invalid" in msg


def test_skip_invalid_counts_and_writes_rejects(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"problem": "ok", "answer": "1"},
            {"problem": "no answer"},
            "not json {",
            {"answer": "2"},
            {"problem": "bad level", "answer": "3", "level": "hard"},
            {"problem": "bad answer type", "answer": [1, 2]},
            {"problem": "ok too", "answer": 2},
        ],
    )
    rejects = tmp_path / "run" / "rejects.jsonl"
    ps = load_math_file(path, skip_invalid=True, rejects_path=rejects)
    assert [p.reference for p in ps] == ["1", "2"]
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [r["line"] for r in rows] == [2, 3, 4, 5, 6]
    assert "answer" in rows[0]["reason"] and "level" in rows[3]["reason"]


def test_duplicate_ids_are_an_error(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "problem": "x", "answer": "1"},
            {"id": "a", "problem": "y", "answer": "2"},
        ],
    )
    with pytest.raises(UserError, match="repeats line 1"):
        load_math_file(path)


def test_parquet_file(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"problem": ["1+1?", "2+2?"], "answer": ["2", "4"]}), path)
    assert [p.reference for p in load_math_file(path)] == ["2", "4"]


def test_unknown_benchmark_lists_the_valid_ones():
    with pytest.raises(UserError) as e:
        load_math_benchmark("math5000", "/nowhere")
    for name in MATH_BENCHMARKS:
        assert name in str(e.value)


def test_benchmark_file_missing_from_data_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="aime24.jsonl not found; --data-dir must hold"):
        load_math_benchmark("aime24", tmp_path)


def test_data_dir_replaces_the_shipped_file(tmp_path):
    row = {"id": 7, "problem": "1+1?", "solution": "2", "answer": "2", "url": "u"}
    write_jsonl(tmp_path / "aime24.jsonl", [row])
    assert [(p.id, p.reference) for p in load_math_benchmark("aime24", str(tmp_path))] == [("aime24:7", "2")]


@pytest.mark.parametrize(
    "name, n, first_id, first_ref",
    [
        ("math500", 500, "math500:test/precalculus/807.json", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("aime24", 30, "aime24:60", "204"),
        ("amc23", 40, "amc23:0", "27"),
        ("gsm8k", 1319, "gsm8k:0", "18"),
        ("minerva_math", 272, "minerva_math:0", "1.6"),
    ],
)
def test_benchmarks_load(name, n, first_id, first_ref):
    ps = load_math_benchmark(name)
    assert len(ps) == n and len({p.id for p in ps}) == n
    assert (ps[0].id, ps[0].reference) == (first_id, first_ref)
    assert all(p.task == "math" and p.reference and p.text.endswith(INSTRUCTION) for p in ps)


def test_math500_levels_become_difficulty():
    ps = load_math_benchmark("math500")
    assert {p.level for p in ps} == {1, 2, 3, 4, 5}
    assert all(p.difficulty == (p.level - 1) / 4 for p in ps)
    assert ps[0].level == 2 and ps[0].difficulty == 0.25
