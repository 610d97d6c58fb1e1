"""The run config's rewards section: options, custom functions (TRL, verl, longrl forms), composition,
remote endpoints, bad input, ``longrl rewards check``, and the trainer's per-term metrics."""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from longrl.config import RewardsConfig, build, dump_yaml, load_config
from longrl.errors import UserError
from longrl.rewards.compose import build_router, term_metrics, total_reward
from longrl.tasks import countdown
from longrl.types import Prompt, Score

REWARDS = '''
import math, os, time

def exact(data_source, solution_str, ground_truth, extra_info=None):
    return float(solution_str.strip() == str(ground_truth))

def verl_dict(data_source, solution_str, ground_truth, extra_info):
    return {"score": 0.5, "source": data_source, "level": (extra_info or {}).get("level")}

def trl_len(prompts, completions, **kwargs):
    return [len(c) / 10 for c in completions]

def trl_columns(completions, difficulty_note, reference):  # no **kwargs: only these are passed
    return [float(n == "hard") + float(r == "4") for n, r in zip(difficulty_note, reference)]

def trl_chat(prompts, completions, **kwargs):
    return [float(p[-1]["role"] == "user" and c[0]["role"] == "assistant") for p, c in zip(prompts, completions)]

def has_answer_line(prompts, completions, **kwargs):
    return [float("\\nanswer " in "\\n" + c) for c in completions]

class Scorer:
    def __call__(self, prompts, responses):
        from longrl.types import Score
        return [Score(1.0, "mine", {"n": len(r)}) for r in responses]

def longrl_fn(prompts, responses):
    return [0.25 for _ in responses]

def boom(prompts, completions, **kwargs):
    raise RuntimeError("boom")

def sometimes_hangs(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "hang":
        time.sleep(600)
    return 1.0

def garbage(data_source, solution_str, ground_truth, extra_info=None):
    return {"nan": float("nan"), "str": "0.5", "list": [1], "none": None}.get(solution_str, 1.0)

def wrong_length(prompts, completions, **kwargs):
    return [1.0]

def dies(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "die":
        os._exit(3)
    return 1.0

def two_args(a, b):
    return 1.0
'''


@pytest.fixture
def rdir(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _p(task="t", ref="4", pid="0", **kw):
    return Prompt(id=pid, text="What is 2+2?", reference=ref, task=task, **kw)


def _rewards(*sets):
    return load_config(None, list(sets)).rewards


# ----------------------------------------------------------------------------- the config


def test_no_rewards_section_is_the_old_behaviour():
    cfg = load_config(None, [])
    assert cfg.rewards == RewardsConfig()
    from longrl.rewards.compose import configured_tasks

    assert configured_tasks(cfg.rewards) == set()  # nothing is built at start-up that was not before
    router = build_router(cfg.rewards)
    p = countdown.heldout_prompts(1)[0]
    assert router([p], ["no answer"])[0] == Score(0.0, "no_answer")
    router.close()


def test_set_binds_a_task_and_adds_terms_and_the_dump_loads_back(rdir):
    cfg = load_config(None, ["rewards.custom.my_task=my_rewards.py:exact",
                             "rewards.terms.countdown.format.fn=my_rewards.py:has_answer_line",
                             "rewards.terms.countdown.format.weight=0.2",
                             "rewards.terms.countdown.length_words=my_rewards.py:trl_len",  # shorthand: weight 1
                             "rewards.math.judge.temperature=0.5", "rewards.code.workers=3"])
    r = cfg.rewards
    assert r.custom == {"my_task": "my_rewards.py:exact"}
    assert r.terms["countdown"]["format"].weight == 0.2 and r.terms["countdown"]["length_words"].weight == 1.0
    assert r.math.judge.temperature == 0.5 and r.code.workers == 3
    import yaml

    again = build(type(cfg), yaml.safe_load(dump_yaml(cfg)))
    assert again.rewards == r


@pytest.mark.parametrize("sets,message", [
    (["rewards.custom.t=nope.py:f"], r"rewards.custom.t: 'nope.py:f': no such file"),
    (["rewards.custom.t=no_such_module_xyz:f"], r"rewards.custom.t: .*no module named 'no_such_module_xyz'"),
    (["rewards.custom.t=my_rewards.py:missing"], r"rewards.custom.t: .*has no 'missing'"),
    (["rewards.custom.t=my_rewards.py:two_args"],
     r"rewards.custom.t: .*takes \(a, b\), which fits none of the accepted signatures: TRL's"),
    (["rewards.custom.t=mathh"], r"rewards.custom.t: 'mathh' is neither a scorer"),
    (["rewards.custom.t=http://"], r"not a URL with a host"),
    (["rewards.terms.nobody.f=my_rewards.py:trl_len"], r"rewards.terms.nobody: task 'nobody' has no scorer"),
    (["rewards.terms.countdown.length=my_rewards.py:trl_len"], r"rewards.terms.countdown.length: 'length' is reserved"),
    (["rewards.terms.countdown.f.wieght=1"], r"unknown config key 'rewards.terms.countdown.f.wieght'; did you mean"),
    (["rewards.math.policy=rule_then_judge"], r"rewards.math.policy=rule_then_judge needs a judge"),
    (["rewards.math.policy=rules"], r"rewards.math.policy: 'rules'"),
    (["rewards.mat.policy=judge"], r"did you mean 'rewards.math'"),
    (["rewards.custom=3"], r"rewards.custom: expected a mapping"),
    (["rewards.code.url=localhost:80"], r"rewards.code.url: 'localhost:80' is not an http\(s\) URL"),
])
def test_bad_rewards_config_is_one_message_naming_the_field(rdir, sets, message):
    with pytest.raises(UserError, match=message):
        load_config(None, sets)


def test_verbs_without_a_run_config_read_the_rewards_section(rdir):
    import argparse

    (rdir / "r.yaml").write_text("rl: {tau: 0.5}\nrewards:\n  custom: {t: my_rewards.py:exact}\n  timeout: 3\n")
    p = argparse.ArgumentParser()
    RewardsConfig.add_arguments(p)
    r = RewardsConfig.from_arguments(p.parse_args(["--rewards", "r.yaml", "--set", "rewards.timeout=4"]))
    assert r.custom == {"t": "my_rewards.py:exact"} and r.timeout == 4.0
    assert RewardsConfig.from_arguments(p.parse_args([])) == RewardsConfig()
    with pytest.raises(UserError, match=r"--set 'rl.tau=1': only rewards.\* options apply here"):
        RewardsConfig.from_arguments(p.parse_args(["--set", "rl.tau=1"]))
    with pytest.raises(UserError, match=r"rewards.custom.t: .*no such file"):
        RewardsConfig.from_arguments(p.parse_args(["--set", "rewards.custom.t=none.py:f"]))


def test_bad_reward_function_stops_train_before_anything_is_written(rdir):
    from test_cli import longrl

    r = longrl("train", "--set", "rewards.custom.countdown=my_rewards.py:two_args", "--out", str(rdir / "runs"),
               cwd=rdir)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "rewards.custom.countdown" in r.stderr and "Traceback" not in r.stderr
    assert not (rdir / "runs").exists()


# ----------------------------------------------------------------------------- the accepted forms


def test_each_signature_form_is_adapted(rdir):
    r = _rewards("rewards.custom.verl=my_rewards.py:exact", "rewards.custom.verl_dict=my_rewards.py:verl_dict",
                 "rewards.custom.trl=my_rewards.py:trl_len", "rewards.custom.cols=my_rewards.py:trl_columns",
                 "rewards.custom.chat=my_rewards.py:trl_chat", "rewards.custom.cls=my_rewards.py:Scorer",
                 "rewards.custom.fn=my_rewards:longrl_fn")  # a module on the working directory
    router = build_router(r)
    try:
        prompts = [_p("verl"), _p("verl"), _p("verl_dict", extra={"data_source": "gsm8k", "extra_info": {"level": 2}}),
                   _p("verl_dict"), _p("trl"), _p("cols", extra={"difficulty_note": "hard"}),
                   _p("chat", messages=[{"role": "user", "content": "2+2?"}]), _p("cls"), _p("fn")]
        out = router(prompts, ["4", "5", "x", "x", "abcde", "x", "x", "xyz", "x"])
    finally:
        router.close()
    assert [s.value for s in out] == [1.0, 0.0, 0.5, 0.5, 0.5, 2.0, 1.0, 1.0, 0.25]
    assert out[2].parts == {"source": "gsm8k", "level": 2} and out[3].parts["source"] == "verl_dict"  # task fallback
    assert out[7].reason == "mine" and out[7].parts == {"n": 3}
    assert {s.reason for i, s in enumerate(out) if i != 7} == {"ok"}


def test_a_failing_function_scores_zero_with_a_reason_and_the_run_goes_on(rdir, capsys):
    r = _rewards("rewards.custom.boom=my_rewards.py:boom", "rewards.custom.hang=my_rewards.py:sometimes_hangs",
                 "rewards.custom.bad=my_rewards.py:garbage", "rewards.custom.short=my_rewards.py:wrong_length",
                 "rewards.custom.die=my_rewards.py:dies", "rewards.timeout=1")
    router = build_router(r)
    try:
        prompts = [_p("boom"), _p("boom"), _p("hang"), _p("hang"), _p("bad"), _p("bad"), _p("bad"), _p("bad"),
                   _p("short"), _p("short"), _p("die"), _p("die")]
        texts = ["a", "b", "hang", "ok", "nan", "str", "list", "none", "a", "b", "die", "ok"]
        out = router(prompts, texts)
        again = router([_p("hang"), _p("die"), _p("boom")], ["ok", "ok", "x"])  # replaced workers answer
    finally:
        router.close()
    assert [s.reason for s in out] == ["reward_error"] * 2 + ["timeout", "ok"] + ["bad_return"] * 3 + \
        ["not_applicable"] + ["bad_return"] * 2 + ["crash", "ok"]
    assert all(s.value == 0.0 for s in out if s.reason != "ok") and all(math.isfinite(s.value) for s in out)
    assert "returned a str" in out[5].parts["detail"] and "returned nan" in out[4].parts["detail"]
    assert [s.reason for s in again] == ["ok", "ok", "reward_error"]
    err = capsys.readouterr().err
    assert err.count("RuntimeError: boom") == 1 and "my_rewards.py:boom failed (reward_error" in err
    assert "_worker_main" not in err  # the traceback starts at the user's frame
    assert err.count("my_rewards.py:garbage failed (bad_return") == 1


# ----------------------------------------------------------------------------- composition


def test_terms_add_to_the_reward_but_not_to_correctness(rdir):
    r = _rewards("rewards.terms.countdown.format.fn=my_rewards.py:has_answer_line",
                 "rewards.terms.countdown.format.weight=0.2", "rewards.terms.countdown.boom=my_rewards.py:boom")
    p = countdown.heldout_prompts(1)[0]
    right = f"...\nanswer {countdown_solution(p)}"
    router = build_router(r)
    try:
        out = router([p, p, p], [right, "answer 1+1+1", "nothing"])
    finally:
        router.close()
    assert [s.value for s in out] == [1.0, 0.0, 0.0] and [s.correct for s in out] == [True, False, False]
    assert [total_reward(s) for s in out] == pytest.approx([1.2, 0.2, 0.0])
    assert out[0].parts["terms"] == {"format": 0.2, "boom": 0.0}
    assert out[0].parts["term_reasons"] == {"boom": "reward_error"}
    m = term_metrics(out)
    assert m["reward/term/task"] == pytest.approx(1 / 3) and m["reward/term/format"] == pytest.approx(0.4 / 3)
    assert m["reward/term_reason/boom/reward_error"] == 3
    assert term_metrics([Score(1.0, "ok")]) == {}


def countdown_solution(p):
    from itertools import permutations, product

    for nums in permutations(p.reference["numbers"]):
        for ops in product("+-*", repeat=len(nums) - 1):
            expr = str(nums[0])
            for o, n in zip(ops, nums[1:]):
                expr = f"({expr}{o}{n})"
            if eval(expr) == p.reference["target"]:  # our own digits and operators
                return expr
    pytest.skip("no +-* solution for this problem")


# ----------------------------------------------------------------------------- remote rewards


class _Endpoint:
    """A reward endpoint on localhost: 1 when the response equals the reference; HTTP 500 when told to fail."""

    def __init__(self):
        self.fail, self.seen = False, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.seen.append((body, self.headers.get("Authorization")))
                if outer.fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                scores = [{"score": float(r == ref), "why": "cmp"} for r, ref in zip(body["responses"], body["references"])]
                data = json.dumps({"scores": scores}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_remote_endpoint_scores_retries_and_is_checked_at_start(monkeypatch):
    ep = _Endpoint()
    monkeypatch.setenv("LONGRL_REWARD_TOKEN", "s3cret")
    router = build_router(_rewards(f"rewards.custom.t={ep.url}", "rewards.retries=1", "rewards.timeout=5"))
    try:
        out = router([_p(), _p()], ["4", "5"])
        assert [(s.value, s.reason, s.parts) for s in out] == [(1.0, "ok", {"why": "cmp"}), (0.0, "ok", {"why": "cmp"})]
        body, auth = ep.seen[-1]
        assert auth == "Bearer s3cret" and body["query"] == ["What is 2+2?4", "What is 2+2?5"]
        ep.fail = True
        out = router([_p()], ["4"])
        assert out[0].reason == "remote_error" and "HTTP 500" in out[0].parts["detail"] and len(ep.seen) == 4
    finally:
        router.close()
        ep.server.shutdown()
        ep.server.server_close()
    with pytest.raises(UserError, match=r"rewards.custom.t: the reward endpoint http://127.0.0.1:\d+/score did not "
                                        r"answer an empty batch"):
        build_router(_rewards(f"rewards.custom.t={ep.url}"))


def test_a_judge_endpoint_that_is_down_is_refused_at_start():
    pytest.importorskip("openai")
    r = _rewards("rewards.math.policy=rule_then_judge", "rewards.math.judge.base_url=http://127.0.0.1:9/v1",
                 "rewards.math.judge.request_timeout=2")
    with pytest.raises(UserError, match=r"judge endpoint http://127.0.0.1:9/v1 did not answer a health check"):
        build_router(r)


def test_math_guard_switches_reach_the_scorer():
    p = Prompt(id="0", text="What is 3+4?", reference="7", task="math")
    response = "The answer:\n```\n\\boxed{7}\n```"
    for sets, reason in [([], "in_code_block"), (["rewards.math.reject_code_block=false"], "ok")]:
        router = build_router(_rewards("rewards.math.workers=1", *sets), tasks={"math"})
        try:
            assert router([p], [response])[0].reason == reason
        finally:
            router.close()


def test_prompts_with_a_task_nobody_scores_are_refused():
    with pytest.raises(UserError, match=r"task 'mine', which has no scorer .* --set rewards.custom.mine="):
        build_router(None, tasks={"mine", "countdown"})


# ----------------------------------------------------------------------------- the verb and the trainer


def test_rewards_check_prints_the_mean_terms_and_reasons(rdir, capsys):
    from longrl.cli import main

    p = countdown.heldout_prompts(1)[0]
    rows = [{"id": p.id, "response": f"...\nanswer {countdown_solution(p)}"}, {"prompt_id": p.id, "response": "x"}]
    (rdir / "resp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["rewards", "check", "--data", "countdown", "--responses", "resp.jsonl",
                 "--set", "rewards.terms.countdown.format.fn=my_rewards.py:has_answer_line",
                 "--set", "rewards.terms.countdown.format.weight=0.5"]) == 0
    out = capsys.readouterr().out
    assert "2 responses to 1 prompts" in out
    assert "reward (total, before the length term)  0.7500" in out and "term format" in out
    assert "no_answer" in out and "ok" in out
    (rdir / "bad.jsonl").write_text('{"id": "nope", "response": "x"}\n')
    assert main(["rewards", "check", "--data", "countdown", "--responses", "bad.jsonl"]) == 2
    assert "bad.jsonl:1: no prompt with id 'nope'" in capsys.readouterr().err


def test_the_trainer_logs_each_term_and_trains_on_their_sum(rdir, tiny_model_dir):
    from longrl.models.loading import load_model
    from longrl.rollout.hf import HFEngine
    from longrl.train.rl import Trainer

    cfg = load_config(None, ["rollout.batch_prompts=2", "rollout.k=2", "rollout.max_length=8", "threads=1",
                             "length_penalty.weight=0.5", "rewards.terms.countdown.format.fn=my_rewards.py:trl_len",
                             "rewards.terms.countdown.format.weight=0.1"])
    model, tok = load_model(tiny_model_dir)
    router = build_router(cfg.rewards)
    try:
        trainer = Trainer(cfg, model, tok, HFEngine(model, [tok.eos_token_id], tok.pad_token_id),
                          countdown.heldout_prompts(4), router)
        m = trainer.step()
    finally:
        router.close()
    trajs = trainer.trained
    assert {"reward/term/task", "reward/term/format", "reward/term/length"} <= set(m)
    assert m["reward/term/task"] + m["reward/term/format"] + m["reward/term/length"] == pytest.approx(m["reward/mean"])
    assert [t.reward for t in trajs] == pytest.approx(
        [t.score.value + len(t.response_text) / 100 + 0.5 * t.len_reward for t in trajs])
