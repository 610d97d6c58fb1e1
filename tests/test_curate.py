"""``longrl curate``: the funnel end to end on a tiny model, its invariant, resume after SIGKILL, bad input."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longrl.cli import main
from longrl.data.curate.model_stages import StageState, Verdicts, direct_answer_prompt, run_stage, spearman
from longrl.data.curate.pipeline import check_partition
from longrl.data.curate.rules import Drop
from longrl.types import Prompt

FAST = ["--set", "curate.n=2", "--set", "curate.hack_n=2", "--set", "curate.max_tokens=8",
        "--set", "curate.hack_max_tokens=4", "--set", "curate.batch_prompts=3", "--quiet"]


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def _curate(tmp_path, model, out="out", extra=(), limit=10):
    rc = main(["curate", "--in", "countdown", "--limit", str(limit), "--model", str(model), "--out",
               str(tmp_path / out), *FAST, *extra])
    return rc, tmp_path / out


def test_funnel_end_to_end_keeps_every_prompt_in_one_file(tmp_path, tiny_model_dir):
    from longrl.data.sources import load_prompts
    from longrl.tasks.countdown import train_prompts

    rc, out = _curate(tmp_path, tiny_model_dir)
    assert rc == 0
    stream = train_prompts(0)
    want = [next(stream).id for _ in range(10)]
    kept, rejected = _ids(out / "kept.jsonl"), _ids(out / "rejected.jsonl")
    assert sorted(kept + rejected) == sorted(want) and not set(kept) & set(rejected)
    report = json.loads((out / "curation_report.json").read_text())
    assert report["counts"] == {"in": 10, "kept": len(kept), "rejected": len(rejected), "invalid_rows": 0}
    assert [s["stage"] for s in report["stages"]] == ["format", "dedup", "decontam", "tags", "difficulty", "hack"]
    assert (out / "curation_report.html").read_text().count("<img") >= 2
    # kept.jsonl trains as is: it loads back, with the pass rate and difficulty the model gave
    prompts = load_prompts(str(out / "kept.jsonl"))
    assert [p.id for p in prompts] == kept
    for p in prompts:
        assert p.task == "countdown" and p.pass_rate is not None and p.difficulty == pytest.approx(1 - p.pass_rate)
    for row in map(json.loads, (out / "rejected.jsonl").read_text().splitlines()):
        assert row["stage"] and row["rule"] and row["reason"]


def test_a_second_run_samples_nothing_and_writes_the_same(tmp_path, tiny_model_dir):
    _, out = _curate(tmp_path, tiny_model_dir)
    first = {n: (out / n).read_text() for n in ("kept.jsonl", "rejected.jsonl")}
    lines = (out / ".curate_state" / "samples.jsonl").read_text().count("\n")
    _, out = _curate(tmp_path, tiny_model_dir)
    assert {n: (out / n).read_text() for n in first} == first
    assert (out / ".curate_state" / "samples.jsonl").read_text().count("\n") == lines


def test_resume_after_sigkill_samples_no_prompt_twice_and_loses_none(tmp_path, tiny_model_dir):
    n = 60
    ref_rc, ref = _curate(tmp_path, tiny_model_dir, "ref", ["--set", "curate.hack_filter=false"], limit=n)
    assert ref_rc == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", "import sys; from longrl.cli import main; sys.exit(main(sys.argv[1:]))",
           "curate", "--in", "countdown", "--limit", str(n), "--model", str(tiny_model_dir), "--out", str(out),
           *FAST, "--set", "curate.hack_filter=false", "--set", "curate.batch_prompts=1"]
    proc = subprocess.Popen(cmd)
    state = out / ".curate_state" / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not state.is_file() or state.read_text().count("\n") < 3):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = state.read_text().count("\n")
    assert 3 <= done_before < n, "the kill should land mid-stage"
    assert main(cmd[3:]) == 0
    rows = [json.loads(line) for line in state.read_text().splitlines()]
    keys = [(r["stage"], r["id"]) for r in rows]
    sampled_ref = (ref / ".curate_state" / "samples.jsonl").read_text().count("\n")  # n less the dedup drops
    assert len(keys) == len(set(keys)) == sampled_ref  # each prompt sampled once across both runs, none lost
    for name in ("kept.jsonl", "rejected.jsonl"):
        assert (out / name).read_text() == (ref / name).read_text()


def test_resume_with_other_sampling_settings_is_refused(tmp_path, tiny_model_dir, capsys):
    _curate(tmp_path, tiny_model_dir)
    rc, _ = _curate(tmp_path, tiny_model_dir, extra=["--set", "curate.n=3"])
    assert rc == 2 and "difficulty" in capsys.readouterr().err
    rc, _ = _curate(tmp_path, tiny_model_dir, extra=["--set", "curate.n=3", "--restart"])
    assert rc == 0


@pytest.mark.parametrize("args, message", [
    (["--set", "curate.drop_pass_rate=1.5"], "curate.drop_pass_rate=1.5: must be in [0, 1]"),
    (["--set", "curate.near_dup_threshold=-0.1"], "curate.near_dup_threshold=-0.1: must be in [0, 1]"),
    (["--set", "curate.nn=3"], "did you mean 'curate.n'"),
    (["--set", "curate.decontam_benchmarks=[math5000]"], "unknown ['math5000']"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, tiny_model_dir, capsys, args, message):
    rc, out = _curate(tmp_path, tiny_model_dir, extra=args)
    assert rc == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_a_model_folder_that_does_not_exist_is_named(tmp_path, capsys):
    rc = main(["curate", "--in", "countdown", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "nope" in capsys.readouterr().err and not (tmp_path / "o").exists()
    rc = main(["curate", "--in", "countdown", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--model" in capsys.readouterr().err


def test_rules_only_needs_no_model(tmp_path):
    rows = [{"id": "a", "problem": "What is $2+3$?", "answer": "5"},
            {"id": "b", "problem": "What is  $2 + 3$?", "answer": "5"},  # a near copy: whitespace only
            {"id": "c", "problem": "Prove that there are infinitely many primes.", "answer": "proof"},
            {"id": "d", "problem": "What is $2+4$?", "answer": "6"}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    assert main(["curate", "--in", str(src), "--out", str(out), "--quiet", "--set", "curate.difficulty=false",
                 "--set", "curate.hack_filter=false"]) == 0
    assert _ids(out / "kept.jsonl") == ["a", "d"]
    rejected = {r["id"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert rejected["b"]["stage"] == "dedup" and rejected["c"]["stage"] == "format"


def test_skipped_rows_are_rejected_rows_and_short_benchmark_problems_are_found_inside_longer_ones(tmp_path):
    from longrl.eval.benchmarks import load_benchmark

    short = next(p for p in load_benchmark("math500") if len(p.tags["problem"].split()) < 5)
    rows = [{"id": "a", "problem": "What is $2+3$?", "answer": "5"},
            {"id": "b", "problem": "no answer here"},
            {"id": "c", "problem": short.tags["problem"] + " Let's think step by step and output the final "
                                   "answer within \\boxed{}.", "answer": "1"}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    assert main(["curate", "--in", str(src), "--out", str(out), "--quiet", "--set", "curate.difficulty=false",
                 "--set", "curate.hack_filter=false", "--set", "data.skip_invalid=true"]) == 0
    assert _ids(out / "kept.jsonl") == ["a"]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["stage"], r.get("line")) for r in rejected] == [("load", 2), ("decontam", None)]
    assert rejected[1]["rule"] == "math500" and rejected[1]["match"] == short.id
    counts = json.loads((out / "curation_report.json").read_text())["counts"]
    assert counts == {"in": 3, "kept": 1, "rejected": 2, "invalid_rows": 1}


def test_duplicate_ids_are_refused(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "x", "problem": "1+1?", "answer": "2"}) + "\n"
                   + json.dumps({"id": "x", "problem": "2+2?", "answer": "4"}) + "\n")
    rc = main(["curate", "--in", str(src), "--out", str(tmp_path / "o"), "--set", "curate.difficulty=false",
               "--set", "curate.hack_filter=false"])
    assert rc == 2 and "id 'x' repeats line 1" in capsys.readouterr().err


# ---- the stage bookkeeping and helpers -----------------------------------------------------------


def _prompt(i, task="math", **kw):
    return Prompt(id=f"p{i}", text=f"question {i}", reference="1", task=task, **kw)


def test_run_stage_samples_only_unrecorded_prompts_in_chunks(tmp_path):
    state = StageState(tmp_path)
    state.add("difficulty", [("p1", Verdicts([True, False], [3, 4]))])
    calls = []

    def sample(ps):
        calls.append([p.id for p in ps])
        return [Verdicts([False, False], [1, 1]) for _ in ps]

    got = run_stage("difficulty", [_prompt(i) for i in range(5)], state, sample, chunk=2, progress=lambda k: None)
    assert calls == [["p0", "p2"], ["p3", "p4"]]
    assert got["p1"].pass_rate == 0.5 and got["p4"].pass_rate == 0.0
    with open(state.path, "a") as f:
        f.write('{"stage": "difficulty", "id": "p9", "corr')  # a line torn by a kill
    assert StageState(tmp_path).get("difficulty", "p9") is None
    assert StageState(tmp_path).get("difficulty", "p3").correct == [False, False]


def test_direct_answer_prompt_replaces_the_reasoning_instruction():
    from longrl.data.math import make_math_prompt

    p = make_math_prompt("m1", "What is $1+1$?", "2", "test")
    q, how = direct_answer_prompt(p)
    assert q.text.startswith("What is $1+1$?") and "step by step" not in q.text and "no reasoning" in q.text
    assert how.prefix(p) == "" and p.text.endswith("\\boxed{}.")  # the original is untouched
    chat = _prompt(2, messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "question 2"}])
    q, _ = direct_answer_prompt(chat)
    assert q.messages[0] == {"role": "system", "content": "s"} and "no reasoning" in q.messages[1]["content"]
    assert chat.messages[1]["content"] == "question 2"
    assert direct_answer_prompt(_prompt(3, task="code")) is None
    cd = Prompt(id="c", text="Use 3 7 8 to make 29.\n", reference={"numbers": [3, 7, 8], "target": 29}, task="countdown")
    q, how = direct_answer_prompt(cd)
    assert q is cd and how.prefix(cd) == "plan 29 from 3 7 8\nanswer " and how.one_line


def test_a_direct_answer_is_graded_on_its_first_line_only(monkeypatch):
    """A guess that goes on to search after its answer line is graded on the answer line alone."""
    import longrl.rollout.text
    from longrl.data.curate.model_stages import sampler
    from longrl.rewards import ScoreRouter
    from longrl.rollout.text import Response

    cd = Prompt(id="c", text="Use 3 7 8 to make 29.\n", reference={"numbers": [3, 7, 8], "target": 29}, task="countdown")
    written = Response("8+7=15 15*3=45\nanswer 7*3=21 21+8=29", 9, "eos")  # a wrong guess, then a search
    monkeypatch.setattr(longrl.rollout.text, "sample_responses", lambda te, ps, **kw: [[written] for _ in ps])
    router = ScoreRouter()
    try:
        direct = sampler(None, router, n=1, max_new_tokens=8, temperature=1.0, seed=0, salt="", direct=True)([cd])
        full = sampler(None, router, n=1, max_new_tokens=8, temperature=1.0, seed=0, salt="")([cd])
    finally:
        router.close()
    assert direct[0].correct == [False] and full[0].correct == [True]


def test_partition_check_catches_a_lost_or_doubled_prompt():
    ps = [_prompt(i) for i in range(3)]
    check_partition(ps, ps[:2], [Drop(ps[2], "s", "r", "")])
    with pytest.raises(AssertionError, match="lost"):
        check_partition(ps, ps[:1], [Drop(ps[2], "s", "r", "")])
    with pytest.raises(AssertionError, match="both"):
        check_partition(ps, ps[:3], [Drop(ps[2], "s", "r", "")])


def test_spearman_handles_ties_and_constants():
    assert spearman([1, 1, 2, 2], [0.1, 0.2, 0.5, 0.6]) == pytest.approx(0.894427, abs=1e-5)
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_the_rewards_section_reaches_the_verifier(tmp_path, tiny_model_dir, capsys):
    """A custom reward bound to the prompts' task grades curation's samples; an unbound task is refused."""
    (tmp_path / "always.py").write_text("def right(data_source, solution_str, ground_truth, extra_info=None):\n"
                                        "    return 1.0\n")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Say {i}.", "answer": str(i), "task": "echo"}) + "\n"
                           for i in range(3)))
    args = ["curate", "--in", str(src), "--model", str(tiny_model_dir), *FAST, "--set", "curate.dedup=false"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "'echo', which has no scorer" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*args, "--out", str(tmp_path / "b"), "--set", f"rewards.custom.echo={tmp_path / 'always.py'}:right"]) == 0
    report = json.loads((tmp_path / "b" / "curation_report.json").read_text())
    assert report["difficulty"]["mean_pass_rate"] == 1.0  # every sample graded right by the custom function
    assert _ids(tmp_path / "b" / "kept.jsonl") == [] and report["counts"]["rejected"] == 3
