"""The real CLI end to end (a 2-iteration run) and its bad-input messages."""

import json
import subprocess
import sys

import pytest

SMALL = [
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "sft.examples=64", "sft.batch_tokens=2048",
    "rollout.batch_prompts=2", "rollout.k=2", "rollout.max_length=24", "rl.iterations=2",
    "data.heldout_per_level=2", "sampling.pool_size=40", "eval.n_samples=1", "checkpoint.every=1",
    "threads=1",
]


def longrl(*args, cwd):
    cmd = [sys.executable, "-m", "longrl.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def _sets(extra=()):
    return [x for s in [*SMALL, *extra] for x in ("--set", s)]


@pytest.mark.parametrize("algorithm", ["mirror_descent", "rest"])
def test_a_full_batch_trains_at_the_configured_learning_rate(tmp_path, algorithm):
    """``rl.lr_per_response`` scales by trained responses, not by the sequences in the loss:
    ``rest`` keeps one sample per group and still steps at ``rl.lr``."""
    sets = _sets([f"rl.algorithm={algorithm}", "rl.lr=3e-5", "rl.lr_final=null"])
    r = longrl("train", *sets, "--out", str(tmp_path / "runs"), "--name", "lr", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "runs" / "lr" / "metrics.jsonl").read_text().splitlines()]
    assert [x["lr"] for x in lines] == [3e-5, 3e-5]


def test_train_two_iterations(tmp_path):
    r = longrl("train", *_sets(), "--out", str(tmp_path / "runs"), "--name", "smoke", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "smoke"
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "eval.jsonl", "report.html"):
        assert (run / f).is_file(), f
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in lines] == [1, 2]
    assert {"reward/mean", "loss", "grad_norm", "response/len_mean"} <= set(lines[0])
    assert (run / "checkpoints" / "iter_2" / "config.json").is_file()
    assert (run / "checkpoints" / "latest").read_text().strip() == "iter_2"
    summary = json.loads((run / "summary.json").read_text())
    assert "initial" in summary and "final" in summary
    # the warm checkpoint is reused: a second run skips SFT
    r2 = longrl("train", *_sets(["rl.iterations=1"]), "--out", str(tmp_path / "runs"), "--name", "again",
                cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "SFT skipped" in r2.stdout


@pytest.mark.parametrize("override,message", [
    ("rl.tua=0.1", "did you mean 'rl.tau'"),
    ("rollout.k=1", "k must be at least 2"),
    ("rl.lr=fast", "rl.lr: expected float"),
    ("model.path=/no/such/model", "model.path"),
    ("rollout.max_length=100000", "exceeds the model's context"),
])
def test_bad_input_stops_cleanly(tmp_path, override, message):
    r = longrl("train", *_sets([override]), "--out", str(tmp_path / "runs"), "--name", "bad", "--quiet",
               cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs" / "bad").exists()  # nothing half-written


def test_unknown_benchmark_lists_valid_ones(tmp_path):
    r = longrl("eval", "--model", str(tmp_path), "--bench", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "choose from" in r.stderr and "countdown" in r.stderr


def test_eval_writes_sampled_and_greedy_rows_that_match_the_summary(tmp_path, tiny_model_dir):
    out = tmp_path / "ev"
    r = longrl("eval", "--model", str(tiny_model_dir), "--bench", "countdown", "--limit", "3", "--n", "2",
               "--max-tokens", "8", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    summary = json.loads((out / "eval_summary.json").read_text())
    sampled = [x for x in rows if x["sample"] != "greedy"]
    greedy = [x for x in rows if x["sample"] == "greedy"]
    assert [x["sample"] for x in sampled] == [0, 1] * 3 and len(greedy) == 3
    assert len({x["prompt_id"] for x in greedy}) == 3
    assert summary["pass@1"] == pytest.approx(sum(x["reward"] > 0 for x in sampled) / 6)
    assert summary["greedy"] == pytest.approx(sum(x["reward"] > 0 for x in greedy) / 3)
    assert summary["tokens_mean"] == pytest.approx(sum(x["tokens"] for x in sampled) / 6)
    assert all(0 <= x["tokens"] <= 8 for x in rows) and "pass@1" in r.stdout


def test_help_lists_verbs(tmp_path):
    r = longrl("--help", cwd=tmp_path)
    assert r.returncode == 0 and "train" in r.stdout and "sft" in r.stdout


def test_sft_on_a_user_file_then_train_from_model_path(tmp_path, tiny_model_dir):
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "Use 1 2 3 to make 9.\\n", "response": "answer (1+2)*3"}\n' * 8)
    out = tmp_path / "sft-model"
    r = longrl("sft", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(out), "--quiet",
               "--set", "sft.batch_tokens=512", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    # any local HF causal-LM folder: the same loop trains it, no warm-up
    r = longrl("train", *_sets([f"model.path={out}", "sft.enabled=false"]), "--out", str(tmp_path / "runs"),
               "--name", "hf", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "runs" / "hf" / "checkpoints" / "iter_2" / "model.safetensors").is_file()


def test_sft_file_with_a_bad_row_names_file_and_line(tmp_path, tiny_model_dir):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n')
    r = longrl("sft", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / "m"),
               cwd=tmp_path)
    assert r.returncode == 2 and f"{data}:2" in r.stderr and not (tmp_path / "m").exists()


def test_mini_batch_size_sets_the_optimizer_steps(tmp_path):
    """rl.mini_batch_size=1: one optimizer step per trained response (2 prompts x 2 samples; responses cut at
    the cap stay in the loss here, unlike in the quickstart preset)."""
    r = longrl("train", *_sets(["rl.iterations=1", "rl.mini_batch_size=1", "rl.mask_truncated=false"]),
               "--out", str(tmp_path / "runs"),
               "--name", "mb", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (m,) = [json.loads(x) for x in (tmp_path / "runs" / "mb" / "metrics.jsonl").read_text().splitlines()]
    assert m["update/steps"] == 4
    bad = longrl("train", *_sets(["rl.mini_batch_size=0"]), "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert bad.returncode == 2 and "rl.mini_batch_size" in bad.stderr


def test_train_inference_mismatch_is_logged_and_tiny_for_the_hf_engine(tmp_path):
    """The hf engine runs the trainer's own module: its log-probs match the training forward."""
    r = longrl("train", *_sets(["rl.iterations=1"]), "--out", str(tmp_path / "runs"), "--name", "mm", "--quiet",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (m,) = [json.loads(x) for x in (tmp_path / "runs" / "mm" / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= m["mismatch/logp_abs_mean"] <= m["mismatch/logp_abs_max"] < 1e-3


def test_mask_truncated_leaves_capped_responses_out_of_the_loss(tmp_path):
    """rl.mask_truncated: one step per response in the loss (rl.mini_batch_size=1), and the responses
    cut at rollout.max_length are not among them; with every response cut, the iteration takes no step."""
    sets = _sets(["rl.mini_batch_size=1", "rl.mask_truncated=true"])
    r = longrl("train", *sets, "--out", str(tmp_path / "runs"), "--name", "mt", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "mt"
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    groups = [json.loads(x) for x in (run / "rollouts.jsonl").read_text().splitlines()]
    capped = 0
    for m in metrics:
        stops = [s for g in groups if g["iter"] == m["iter"] for s in g["stop"]]
        assert len(stops) == 4
        capped += stops.count("max_length")
        assert m["update/steps"] == len(stops) - stops.count("max_length")
    assert capped > 0  # the small model runs into the 24-token cap


def test_grpo_with_top_p_starts_at_ratio_one(tmp_path):
    """rl.algorithm=grpo with rollout.top_p=0.5: the first step's log-ratio is 0 (it was log of the nucleus
    mass before log pi_i was recomputed), so no negative-advantage token is clipped at step 1."""
    sets = _sets(["rl.iterations=1", "rl.algorithm=grpo", "rollout.top_p=0.5", "rl.mini_batches=1",
                  "rl.mask_truncated=false"])
    r = longrl("train", *sets, "--out", str(tmp_path / "runs"), "--name", "g", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (m,) = [json.loads(x) for x in (tmp_path / "runs" / "g" / "metrics.jsonl").read_text().splitlines()]
    assert m["update/delta_abs"] < 1e-4
