"""``longrl warmup-data`` (k1.5 §2.2): rejection-sampled long-CoT warm-up data from a teacher.

End to end through ``longrl.cli.main`` with a local tiny teacher and with an OpenAI-compatible
teacher (a local ``http.server`` stub: the real component, any OpenAI-compatible server, cannot
run here); the selection stages; and bad input refused before any sampling, with nothing written.
"""

import json
import random
import re
import socket

import pytest

from longrl.cli import main
from longrl.data.prompts import load_prompt_file, load_sft_file
from longrl.data.warmup import (
    DEFAULT_INSTRUCTION,
    EndpointTeacher,
    Sample,
    run_warmup,
    select,
    with_instruction,
)
from longrl.rewards import ScoreRouter, register_scorer
from longrl.types import Prompt, Score

from openai_stub import StubOpenAI, serve

INSTRUCTION = "Plan, check each step, reflect."  # short: the fixture model's context is 256 tokens


@register_scorer("warmup_test")
class _EvenScorer:
    """A deterministic stand-in verifier, so an untrained tiny teacher yields mixed groups.

    It also checks that the verifier is handed the student's prompt, never the teacher's.
    """

    def __init__(self, **_):
        pass

    def __call__(self, prompts, responses):
        assert not any(INSTRUCTION in p.text or DEFAULT_INSTRUCTION in p.text for p in prompts)
        return [Score(1.0, "ok") if len(r) % 2 == 0 else Score(0.0, "wrong") for r in responses]


def _run(*argv):
    return main(["warmup-data", "--quiet", *map(str, argv)])


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"Use 3 {i} to make {3 + i}.", "answer": str(3 + i), "task": "warmup_test",
             "level": 1 + i % 2} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def instruction_file(tmp_path):
    path = tmp_path / "instruction.txt"
    path.write_text(INSTRUCTION + "\n")
    return path


# ----------------------------------------------------------------------------- local teacher


def test_local_teacher_end_to_end(tiny_model_dir, prompt_file, instruction_file, tmp_path):
    out = tmp_path / "warm"
    out.mkdir()
    (out / "stale.txt").write_text("replaced under --force")
    args = ("--in", prompt_file, "--out", out, "--teacher", tiny_model_dir, "--n", 4, "--max-tokens", 12,
            "--instruction-file", instruction_file, "--force")
    assert _run(*args) == 2  # the untrained teacher never stops before 12 tokens: all truncated, nothing kept
    assert (out / "stale.txt").is_file()
    assert _run(*args, "--keep-truncated") == 0
    assert sorted(p.name for p in out.iterdir()) == ["samples.jsonl", "warmup.jsonl", "warmup_report.json"]
    assert not list(tmp_path.glob(".warm.*"))  # no temporary folder left

    prompts = {p.id: p for p in load_prompt_file(prompt_file)}
    rows = _read_jsonl(out / "warmup.jsonl")
    assert len(load_sft_file(out / "warmup.jsonl")) == len(rows) > 0
    scores = ScoreRouter()([prompts[r["prompt_id"]] for r in rows], [r["response"] for r in rows])
    assert all(s.correct for s in scores)  # every kept response passes the prompt's verifier
    assert all(r["prompt"] == prompts[r["prompt_id"]].text for r in rows)  # the student's prompt, no instruction

    samples = _read_jsonl(out / "samples.jsonl")
    assert len(samples) == 4 * len(prompts)
    assert all(s["kept"] != bool(s["dropped_by"]) for s in samples)  # each sample kept or dropped by a stage
    assert {(s["prompt_id"], s["index"]) for s in samples if s["kept"]} == {(r["prompt_id"], r["sample"]) for r in rows}

    rep = json.loads((out / "warmup_report.json").read_text())
    assert (rep["prompts"], rep["samples"], rep["kept"]) == (4, 16, len(rows))
    assert rep["correct"] == sum(s["correct"] for s in samples) and rep["yield"] == rep["correct"] / 16
    assert sum(rep["correct_per_prompt_histogram"].values()) == 4
    assert set(rep["per_difficulty"]) == {"level 1", "level 2"}
    assert sum(g["kept"] for g in rep["per_difficulty"].values()) == rep["kept"]
    assert rep["kept_tokens_mean"] == pytest.approx(sum(r["tokens"] for r in rows) / len(rows), abs=0.01)
    assert rep["teacher"]["kind"] == "local" and rep["instruction"] == INSTRUCTION and rep["seconds"] > 0


def test_countdown_with_an_untrained_teacher_writes_nothing(tiny_model_dir, instruction_file, tmp_path, capsys):
    out = tmp_path / "warm"
    assert _run("--in", "countdown", "--limit", 2, "--out", out, "--teacher", tiny_model_dir, "--n", 2,
                "--max-tokens", 8, "--instruction-file", instruction_file) == 2
    assert "no sample was kept" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["instruction.txt"]  # no output, no temporary folder


# ----------------------------------------------------------------------------- endpoint teacher


def _countdown_answer(prompt: str, seed: int) -> str:
    """A teacher that searches aloud (the built-in trace writer) and is wrong one time in three."""
    from longrl.tasks.countdown import write_trace

    m = re.search(r"Use ([\d ]+) to make (\d+)\.", prompt)
    if m is None or "FAIL" in prompt:
        raise ValueError("not a countdown prompt")
    if seed % 3 == 0:
        return "plan\nanswer 1+1"
    numbers = [int(x) for x in m.group(1).split()]
    return write_trace(numbers, int(m.group(2)), random.Random(seed), give_up_prob=0, slip_prob=0.2)


class _Teacher(StubOpenAI):
    model_id = "teacher-7b"

    def reply(self, body):
        return _countdown_answer(body["messages"][-1]["content"], body["seed"])

    def record(self, body):
        return body, self.headers.get("Authorization")


@pytest.fixture
def server():
    pytest.importorskip("openai", reason="the endpoint teacher needs `pip install openai`")
    with serve(_Teacher) as served:
        yield served


def test_endpoint_teacher_on_countdown_keeps_the_shortest_verified(server, tmp_path, monkeypatch):
    srv, url = server
    monkeypatch.setenv("WARMUP_TEST_KEY", "sk-test")
    out = tmp_path / "warm"
    assert _run("--in", "countdown", "--limit", 5, "--out", out, "--base-url", url, "--teacher-model", "teacher-7b",
                "--api-key-env", "WARMUP_TEST_KEY", "--n", 6, "--max-tokens", 300, "--keep", "shortest") == 0

    assert len(srv.seen) == 5 * 6  # one request per sample
    body, auth = srv.seen[0]
    assert auth == "Bearer sk-test" and body["model"] == "teacher-7b" and body["max_tokens"] == 300
    assert all(DEFAULT_INSTRUCTION in b["messages"][-1]["content"] for b, _ in srv.seen)  # the teacher is told
    assert len({b["seed"] for b, _ in srv.seen}) == 30  # a seed per sample

    from longrl.data.warmup import load_source

    prompts = {p.id: p for p in load_source("countdown", limit=5)}
    rows = _read_jsonl(out / "warmup.jsonl")
    assert len(load_sft_file(out / "warmup.jsonl")) == len(rows) == 5  # one per prompt (every prompt solved)
    assert all(r["prompt"] == prompts[r["prompt_id"]].text and DEFAULT_INSTRUCTION not in r["prompt"] for r in rows)
    router = ScoreRouter()
    assert all(s.correct for s in router([prompts[r["prompt_id"]] for r in rows], [r["response"] for r in rows]))

    samples = _read_jsonl(out / "samples.jsonl")
    for r in rows:  # the kept one is the shortest correct sample of its prompt
        mine = [s for s in samples if s["prompt_id"] == r["prompt_id"] and s["correct"]]
        assert r["tokens"] == min(s["tokens"] for s in mine)
    rep = json.loads((out / "warmup_report.json").read_text())
    assert rep["teacher"] == {"kind": "endpoint", "model": "teacher-7b", "base_url": url, "concurrency": 8,
                              "failed_requests": {}}
    assert rep["reasons"]["ok"] == rep["correct"] and 0 < rep["yield"] < 1 and rep["prompt_yield"] == 1.0
    assert set(rep["per_difficulty"]) <= {"level 1", "level 2", "level 3"}
    assert rep["dropped_by"]["wrong"] == 30 - rep["correct"]


def test_chat_prompts_get_the_instruction_in_their_last_user_turn_only(server, tmp_path):
    srv, url = server
    rows = [{"id": "c0", "task": "countdown", "reference": {"numbers": [3, 5, 1], "target": 8},
             "prompt": [{"role": "system", "content": "You solve puzzles."},
                        {"role": "user", "content": "Use 3 5 1 to make 8."}]}]
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "warm"
    assert _run("--in", src, "--out", out, "--base-url", url, "--n", 3, "--max-tokens", 64,
                "--instruction-file", tmp_path / "none.txt") == 2  # a missing instruction file is refused
    (tmp_path / "i.txt").write_text("{prompt}\nReflect before answering.")
    assert _run("--in", src, "--out", out, "--base-url", url, "--n", 3, "--max-tokens", 64,
                "--instruction-file", tmp_path / "i.txt") == 0
    sent = [b["messages"] for b, _ in srv.seen]
    assert all(m == [{"role": "system", "content": "You solve puzzles."},
                     {"role": "user", "content": "Use 3 5 1 to make 8.\nReflect before answering."}] for m in sent)
    (row,) = _read_jsonl(out / "warmup.jsonl")[:1]
    assert row["prompt"] == rows[0]["prompt"]  # as the student sees it: the messages, no instruction
    from longrl.data.sources import load_sft_examples

    assert load_sft_examples(str(out / "warmup.jsonl"))[0][0] == rows[0]["prompt"]  # and `longrl sft` reads them


def test_failed_requests_are_rejected_samples_not_a_crash(server, tmp_path):
    _, url = server
    teacher = EndpointTeacher(url, model=None, api_key=None, max_new_tokens=64, temperature=1.0, seed=0,
                              client_retries=0)
    prompts = [Prompt(id="a", text="Use 3 5 1 to make 8.", reference={"numbers": [3, 5, 1], "target": 8}, task="countdown"),
               Prompt(id="b", text="FAIL", reference={"numbers": [3, 5], "target": 8}, task="countdown")]
    sft, aud = tmp_path / "sft.jsonl", tmp_path / "samples.jsonl"
    with open(sft, "w") as f, open(aud, "w") as g:
        res = run_warmup(prompts, teacher, ScoreRouter(), n=3, instruction="", sft_out=f, samples_out=g,
                         progress=False)
    teacher.close()
    assert res.stops["error"] == 3 and res.reasons["request_error"] == 3
    assert teacher.describe()["failed_requests"] == {"InternalServerError": 3}
    assert all(r["prompt_id"] == "a" for r in _read_jsonl(sft))


def _closed_port() -> int:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_endpoint_down_is_refused_at_start(tmp_path, capsys):
    pytest.importorskip("openai", reason="the endpoint teacher needs `pip install openai`")
    out = tmp_path / "warm"
    assert _run("--in", "countdown", "--limit", 2, "--out", out, "--base-url",
                f"http://127.0.0.1:{_closed_port()}/v1") == 2
    err = capsys.readouterr().err
    assert "teacher endpoint" in err and "did not answer a health check" in err and "--base-url" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("extra, needle", [
    (["--in", "missing.jsonl"], "--in missing.jsonl: no such file"),
    (["--teacher", "NOTAMODEL"], "not a Hugging Face model folder"),
    (["--n", "0"], "--n 0"),
    (["--temperature", "0"], "--temperature 0"),
    (["--per-prompt", "0"], "--per-prompt 0"),
    (["--engine", "vllm", "--base-url", "http://127.0.0.1:1/v1"], "--engine"),
    (["--api-key-env", "WARMUP_TEST_UNSET_VAR", "--base-url", "http://127.0.0.1:1/v1"], "WARMUP_TEST_UNSET_VAR"),
    (["--instruction-file", "nope.txt"], "--instruction-file nope.txt"),
    (["--out", "FULL"], "already exists and is not empty"),
])
def test_bad_input_is_refused_before_sampling(tiny_model_dir, tmp_path, capsys, monkeypatch, extra, needle):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WARMUP_TEST_UNSET_VAR", raising=False)
    (tmp_path / "NOTAMODEL").mkdir()
    (tmp_path / "FULL").mkdir()
    (tmp_path / "FULL" / "keep.txt").write_text("x")
    args = {"--in": "countdown", "--out": "out", "--teacher": str(tiny_model_dir)}
    i = 0
    while i < len(extra):  # an option given in extra replaces the default
        args[extra[i]] = extra[i + 1] if i + 1 < len(extra) and not extra[i + 1].startswith("--") else None
        i += 1 if args[extra[i]] is None else 2
    if "--base-url" in args:
        del args["--teacher"]
    argv = [x for k, v in args.items() for x in ([k] if v is None else [k, v])]
    assert _run(*argv, "--limit", 2) == 2
    assert needle in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FULL", "NOTAMODEL"]  # nothing written
    assert (tmp_path / "FULL" / "keep.txt").read_text() == "x"


# ----------------------------------------------------------------------------- pieces


def test_instruction_goes_on_a_copy_of_text_and_last_user_message():
    msgs = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    p = Prompt(id="0", text="Q2", reference="1", task="math", messages=msgs)
    q = with_instruction(p, "Reason at length.\n\n{prompt}\n\nCheck your answer.")
    assert q.text == "Reason at length.\n\nQ2\n\nCheck your answer."
    assert [m["content"] for m in q.messages] == ["Be terse.", "Q1", "A1", q.text]
    assert p.text == "Q2" and [m["content"] for m in p.messages] == ["Be terse.", "Q1", "A1", "Q2"]  # unchanged
    assert with_instruction(p, "") is p  # an empty instruction file: the prompt as it is


def test_select_stages():
    def make(j, text, ok, tokens):
        return Sample("p", j, text, tokens, "eos", ok, "ok" if ok else "wrong")

    samples = [make(0, "long answer", True, 9), make(1, "bad", False, 2), make(2, "short", True, 4),
               make(3, "long answer", True, 9), make(4, "mid one", True, 6)]
    assert [s.index for s in select(samples, "all", None)] == [0, 2, 4]
    assert [s.dropped_by for s in samples] == [None, "wrong", None, "duplicate", None]
    assert [s.index for s in select(samples, "shortest", 2)] == [2, 4]
    assert samples[0].dropped_by == "per_prompt"
    assert [s.index for s in select(samples, "first", 1)] == [0]
    assert all(s.kept != bool(s.dropped_by) for s in samples)


def test_a_correct_response_cut_at_max_tokens_is_not_an_sft_target():
    cut = Sample("p", 0, "\\boxed{5} but let me double-check by", 12, "max_length", True, "ok")
    done = Sample("p", 1, "\\boxed{5}", 4, "eos", True, "ok")
    assert select([cut, done], "all", None) == [done] and cut.dropped_by == "truncated"
    assert select([cut, done], "all", None, keep_truncated=True) == [cut, done]
