"""Prompt sources (longrl.data.sources): every format users store prompts in reads to the same
Prompts, prompt_row writes them back losslessly, bad rows are named, and the verbs take them."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longrl.config import DataConfig
from longrl.data.sources import (
    code_reference,
    load_prompts,
    load_sft_examples,
    parse_hf,
    prompt_row,
    source_name,
    task_from_source,
)
from longrl.errors import UserError
from longrl.types import Prompt

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap")

TEXT_ROWS = [
    {"id": "a", "prompt": "What is 2+2?", "answer": "4", "level": 1, "source": "hand"},
    {"id": "b", "problem": "What is 3*3?", "answer": 9, "level": 3, "pass_rate": 0.25, "tags": {"kind": "mul"}},
    {"id": "c", "question": "Half of 5?", "reference": "\\frac{5}{2}", "difficulty": 0.7, "level": 2},
    {"id": "d", "prompt": "Read two ints, print the sum.", "tests": [{"input": "1 2\n", "output": "3\n"}],
     "time_limit": 2},
]

CHAT = [{"role": "system", "content": "Reason step by step."}, {"role": "user", "content": "What is 6*7?"}]
PRIME_STDIO = json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]})
PRIME_CALL = json.dumps({"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [[3], [7]]})
VERL_ROWS = [
    {"data_source": "openai/gsm8k", "ability": "math", "prompt": CHAT,
     "reward_model": {"style": "rule", "ground_truth": "42"}, "extra_info": {"split": "train", "index": 0}},
    {"data_source": "codecontests", "ability": "code", "prompt": [{"role": "user", "content": "Sum two ints."}],
     "reward_model": {"style": "rule", "ground_truth": PRIME_STDIO}, "extra_info": {"split": "train", "index": 1}},
    {"data_source": "apps", "ability": "code", "prompt": [{"role": "user", "content": "Write add(a, b)."}],
     "reward_model": {"style": "rule", "ground_truth": PRIME_CALL}, "extra_info": {"split": "train", "index": 2}},
]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """load_dataset caches what it builds; keep that in the test's folder, not the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(k for r in rows for k in r))  # a row without a column gets null there
    pq.write_table(pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in columns}), path)
    return path


def round_trip(prompts: list[Prompt], tmp_path: Path, data: DataConfig | None = None) -> list[Prompt]:
    """prompt_row -> kept.jsonl -> load_prompts (what `longrl curate` writes and `train` reads)."""
    path = write_jsonl(tmp_path / "kept.jsonl", [json.dumps(prompt_row(p)) for p in prompts])
    return load_prompts(str(path), data)


# ------------------------------------------------------------------------------ formats


def test_jsonl_text_rows_read_and_round_trip(tmp_path):
    ps = load_prompts(write_jsonl(tmp_path / "p.jsonl", TEXT_ROWS))
    a, b, c, d = ps
    assert (a.text, a.reference, a.task, a.level, a.difficulty, a.extra) == ("What is 2+2?", "4", "math", 1, 0.0,
                                                                              {"source": "hand"})
    assert (b.text, b.reference, b.difficulty, b.pass_rate, b.tags) == ("What is 3*3?", 9, 1.0, 0.25, {"kind": "mul"})
    assert (c.text, c.reference, c.difficulty) == ("Half of 5?", "\\frac{5}{2}", 0.7)  # a given difficulty wins
    assert d.task == "code" and d.reference == {"tests": [{"input": "1 2\n", "output": "3\n"}], "time_limit": 2}
    assert all(p.messages is None for p in ps)
    assert round_trip(ps, tmp_path) == ps


def test_parquet_reads_like_jsonl(tmp_path):
    rows = [r | {"answer": str(r["answer"])} if "answer" in r else r for r in TEXT_ROWS]  # one type per column
    from_jsonl = load_prompts(write_jsonl(tmp_path / "p.jsonl", rows))
    # Parquet fills a column a row lacks with null, and a null reads as an absent field
    from_parquet = load_prompts(write_parquet(tmp_path / "p.parquet", rows))
    assert from_parquet == from_jsonl
    assert round_trip(from_parquet, tmp_path) == from_parquet


def test_verl_parquet_maps_messages_reference_task_and_extra(tmp_path):
    gsm, stdio, call = load_prompts(write_parquet(tmp_path / "train.parquet", VERL_ROWS))
    assert gsm.messages == CHAT and gsm.text == "What is 6*7?" and gsm.reference == "42" and gsm.task == "math"
    assert gsm.id == "0" and gsm.extra == {"data_source": "openai/gsm8k", "ability": "math",
                                           "reward_model": {"style": "rule"},
                                           "extra_info": {"split": "train", "index": 0}}
    assert stdio.task == "code" and stdio.reference == {"tests": [{"input": "1 2\n", "output": "3\n"},
                                                                  {"input": "5 5\n", "output": "10\n"}]}
    assert call.task == "code" and call.reference["entry_point"] == "add"
    assert "assert _same(candidate(*[3, 4]), [7])" in call.reference["test"]
    assert round_trip([gsm, stdio, call], tmp_path) == [gsm, stdio, call]


@needs_bwrap
def test_verl_code_references_score_with_the_code_scorer(tmp_path):
    from longrl.rewards import get_scorer

    _, stdio, call = load_prompts(write_parquet(tmp_path / "train.parquet", VERL_ROWS))
    scorer = get_scorer("code", time_limit=5.0)
    try:
        ok = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
        fn, wrong = "```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return a - b\n```"
        scores = scorer([stdio, call, call], [ok, fn, wrong])
    finally:
        scorer.close()
    assert [s.reason for s in scores] == ["ok", "ok", "wrong_answer"]


def test_trl_style_columns_are_mapped(tmp_path):
    rows = [{"query": [{"role": "user", "content": "Compute 1+4."}], "solution": "1+4 = 5, so $\\boxed{5}$.",
             "meta": {"final": "5", "source": "x"}, "id": "q1"}]
    path = write_jsonl(tmp_path / "trl.jsonl", rows)
    (p,) = load_prompts(path, DataConfig(prompt_key="query"))
    assert p.reference == "5" and p.text == "Compute 1+4." and p.messages == rows[0]["query"]  # solution reduced
    assert p.extra == {"meta": {"final": "5", "source": "x"}}
    (q,) = load_prompts(path, DataConfig(prompt_key="query", answer_key="meta.final"))
    assert q.reference == "5" and q.extra == {"solution": rows[0]["solution"], "meta": {"source": "x"}}
    assert round_trip([p], tmp_path) == [p]
    # TRL's default names need no mapping: a `prompt` of messages and a `solution`
    (r,) = load_prompts(write_jsonl(tmp_path / "t2.jsonl", [{"prompt": rows[0]["query"], "solution": "#### 5"}]))
    assert (r.reference, r.messages, r.id) == ("5", rows[0]["query"], "t2-1")


def test_chat_message_prompts_round_trip(tmp_path):
    rows = [{"id": "m", "prompt": CHAT, "answer": "42", "task": "math"},
            {"id": "n", "prompt": [{"role": "user", "content": "Hi?"}], "answer": "hi", "level": 2}]
    ps = load_prompts(write_jsonl(tmp_path / "chat.jsonl", rows))
    assert [p.messages for p in ps] == [CHAT, rows[1]["prompt"]] and [p.text for p in ps] == ["What is 6*7?", "Hi?"]
    assert round_trip(ps, tmp_path) == ps


def test_saved_hf_dataset_and_a_folder_of_parquet_files(tmp_path):
    import datasets

    rows = [r | {"id": str(i)} for i, r in enumerate(VERL_ROWS)]
    expected = load_prompts(write_jsonl(tmp_path / "rows.jsonl", rows))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    assert load_prompts(str(tmp_path / "saved")) == expected
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved_dict"))
    assert load_prompts(str(tmp_path / "saved_dict")) == expected
    folder = tmp_path / "repo" / "data"
    folder.mkdir(parents=True)
    write_parquet(folder / "train-00000-of-00002.parquet", rows[:2])
    write_parquet(folder / "train-00001-of-00002.parquet", rows[2:])
    repo = tmp_path / "repo"
    assert load_prompts(str(repo)) == expected  # a folder of data files
    assert load_prompts(f"hf:{repo}") == expected  # a script-free dataset repo, through load_dataset
    assert load_prompts(f"hf:{repo}:train[1:]") == expected[1:]
    with pytest.raises(UserError, match="could not load dataset"):
        load_prompts(f"hf:{repo}:test")


def test_hf_specs_parse():
    assert parse_hf("hf:gsm8k") == ("gsm8k", None, "train")
    assert parse_hf("hf:openai/gsm8k:test") == ("openai/gsm8k", None, "test")
    assert parse_hf("hf:openai/gsm8k:main:train[:10%]") == ("openai/gsm8k", "main", "train[:10%]")
    assert source_name("hf:openai/gsm8k:main:train[:10%]") == "gsm8k-train_10"
    with pytest.raises(UserError, match="hf:NAME:CONFIG:SPLIT"):
        parse_hf("hf:a:b:c:d")


def test_hf_offline_and_uncached_names_the_dataset_and_the_setting(tmp_path):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-m", "longrl.cli", "eval", "--model", str(tmp_path), "--data",
                        "hf:nobody-here/no-such-set"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "'nobody-here/no-such-set'" in r.stderr and "HF_DATASETS_OFFLINE" in r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------ bad input


def test_bad_rows_name_file_and_line_and_skip_invalid_counts_them(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "ok", "answer": "1"},
        {"prompt": "no reference"},
        "not json {",
        {"prompt": [{"role": "assistant", "content": "x"}], "answer": "1"},
        {"prompt": "list answer", "answer": [1, 2]},
        {"prompt": "bad code", "task": "code", "reference": "print(1)"},
        {"prompt": "Write add(a, b).", "task": "code", "reference": PRIME_CALL, "level": "Level 2"},
        {"prompt": "ok too", "answer": "2", "level": "hard"},
    ])
    with pytest.raises(UserError) as e:
        load_prompts(path)
    msg = str(e.value)
    assert f"{path}:2: missing the reference" in msg and f"{path}:3: not valid JSON" in msg
    assert f"{path}:4:" in msg and "user turn" in msg and "skip_invalid" in msg
    rejects = tmp_path / "run" / "rejects.jsonl"
    ps = load_prompts(path, DataConfig(skip_invalid=True), rejects_path=rejects)
    assert [p.text for p in ps] == ["ok", "Write add(a, b)."] and ps[1].level == 2
    rows = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [r["line"] for r in rows] == [2, 3, 4, 5, 6, 8] and rows[0]["file"] == str(path)
    assert "not text" in rows[4]["reason"] and "level" in rows[5]["reason"]


def test_dataset_rows_are_named_by_index(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": None},
                                {"prompt": "a2", "answer": "1"}]).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(UserError, match=r"ds\[1\]: missing the reference"):
        load_prompts(str(tmp_path / "ds"))
    ps = load_prompts(str(tmp_path / "ds"), skip_invalid=True, rejects_path=tmp_path / "rejects.jsonl")
    assert [p.id for p in ps] == ["ds-0", "ds-2"]
    (row,) = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert (row["dataset"], row["index"]) == (str(tmp_path / "ds"), 1)


def test_unknown_column_key_names_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "question": "q?", "answer": "1"}])
    with pytest.raises(UserError) as e:
        load_prompts(path, DataConfig(prompt_key="query"))
    assert str(e.value) == f"data.prompt_key='query': {path} has no column 'query'; columns: id, question, answer"
    with pytest.raises(UserError, match="data.answer_key='rm.gt': .* no column 'rm'"):
        load_prompts(path, DataConfig(answer_key="rm.gt"))


def test_duplicate_ids_are_bad_rows(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "x", "prompt": "a", "answer": "1"},
                                              {"id": "x", "prompt": "b", "answer": "2"}])
    with pytest.raises(UserError, match=r"p.jsonl:2: id 'x' repeats line 1"):
        load_prompts(path)


def test_code_reference_formats():
    assert code_reference([{"input": "1\n", "output": "1\n", "testtype": "stdin"}]) == \
        {"tests": [{"input": "1\n", "output": "1\n"}]}
    with pytest.raises(ValueError, match="functional"):
        code_reference([{"input": "1", "output": "1", "testtype": "functional"}])
    with pytest.raises(ValueError, match="Solution.add"):
        code_reference(PRIME_CALL, "class Solution:\n    def add(self, a, b):")
    with pytest.raises(ValueError, match="equal length"):
        code_reference({"inputs": ["1"], "outputs": []})
    with pytest.raises(ValueError, match="text 'inputs'"):
        code_reference({"inputs": [[1]], "outputs": ["1"]})


def test_task_is_inferred_from_verl_fields_and_data_task_default(tmp_path):
    assert task_from_source("math", "DigitalLearningGmbH/MATH-lighteval") == "math"
    assert task_from_source(None, "livecodebench/code_generation_lite") == "code"
    assert task_from_source("coding", None) == "code" and task_from_source("chemistry", "sciq") is None
    rows = [{"prompt": "p1", "answer": "1", "data_source": "my-set"}, {"prompt": "p2", "answer": "2", "task": "math"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    assert [p.task for p in load_prompts(path, DataConfig(task_default="countdown"))] == ["countdown", "math"]
    with pytest.raises(UserError, match="data.task_default: empty"):
        DataConfig(task_default=" ").validate()
    with pytest.raises(UserError, match="data.answer_key: 'a..b' is not a column name"):
        DataConfig(answer_key="a..b").validate()


def test_load_prompt_file_keeps_working(tmp_path):
    from longrl.data.prompts import load_prompt_file

    ps = load_prompt_file(write_parquet(tmp_path / "v.parquet", VERL_ROWS), default_task="code")
    assert [p.task for p in ps] == ["math", "code", "code"]


# ------------------------------------------------------------------------------ SFT


def test_sft_formats(tmp_path):
    rows = [{"prompt": "p1", "response": "r1"},
            {"prompt": "p2", "completion": "r2"},
            {"prompt": [{"role": "user", "content": "p3"}], "completion": [{"role": "assistant", "content": "r3"}]},
            {"messages": CHAT + [{"role": "assistant", "content": "42"}]}]
    got = load_sft_examples(str(write_jsonl(tmp_path / "sft.jsonl", rows)))
    assert got == [("p1", "r1"), ("p2", "r2"), ([{"role": "user", "content": "p3"}], "r3"), (CHAT, "42")]
    mapped = write_jsonl(tmp_path / "m.jsonl", [{"problem": "x", "solution": "long cot"}])
    assert load_sft_examples(mapped, DataConfig(response_key="solution")) == [("x", "long cot")]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "a"},
                                               {"messages": [{"role": "user", "content": "only"}]}])
    with pytest.raises(UserError) as e:
        load_sft_examples(bad)
    assert f"{bad}:2: missing 'response' text" in str(e.value) and f"{bad}:3:" in str(e.value)
    assert load_sft_examples(bad, skip_invalid=True) == [("a", "b")]
    with pytest.raises(UserError, match="data.response_key='answer': .* columns: prompt, response"):
        load_sft_examples(bad, DataConfig(response_key="answer"))


# ------------------------------------------------------------------------------ the verbs


def _longrl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "longrl.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_verl_parquet_trains_and_evaluates_through_the_cli(tmp_path, tiny_model_dir, chatml_model_dir):
    train_rows = [{"data_source": "openai/gsm8k", "ability": "math",
                   "prompt": [{"role": "system", "content": "Answer."}, {"role": "user", "content": f"{i}+1?"}],
                   "reward_model": {"style": "rule", "ground_truth": str(i + 1)}, "extra_info": {"index": i}}
                  for i in range(6)]
    test_rows = [r | {"prompt": [{"role": "user", "content": f"{i}+2?"}], "extra_info": {"index": i}}
                 for i, r in enumerate(train_rows[:2])]
    train, held = write_parquet(tmp_path / "train.parquet", train_rows), write_parquet(tmp_path / "test.parquet",
                                                                                       test_rows)
    sets = [f"data.task={train}", f"data.eval_file={held}", f"model.path={tiny_model_dir}", "sft.enabled=false",
            "rollout.batch_prompts=2", "rollout.k=2", "rollout.max_length=8", "rl.iterations=1",
            "eval.n_samples=1", "checkpoint.every=1", "threads=1"]
    r = _longrl("train", *[x for s in sets for x in ("--set", s)], "--out", str(tmp_path / "runs"), "--name", "v",
                "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "v"
    assert (run / "checkpoints" / "iter_1" / "config.json").is_file()
    assert json.loads((run / "summary.json").read_text())["final"]["eval/pass1"] >= 0
    # the trained checkpoint on the verl test file; and a chat model renders the messages with its template
    for model, extra in ((run / "checkpoints" / "iter_1", []), (chatml_model_dir, ["--chat-template"])):
        out = tmp_path / f"eval-{Path(model).name}"
        r = _longrl("eval", "--model", str(model), "--data", str(held), "--n", "1", "--max-tokens", "4",
                    "--no-greedy", "--out", str(out), *extra, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        summary = json.loads((out / "eval_summary.json").read_text())
        assert summary["prompts"] == 2 and summary["benchmark"] == "test"
