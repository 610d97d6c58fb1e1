"""long2short (k1.5 §2.4): merging, shortest selection, DPO pairs and loss, the CLI and its bad input."""

import json
import shutil

import pytest
import torch

from longrl.algo.losses import dpo_loss
from longrl.cli import main
from longrl.errors import UserError
from longrl.long2short.select import Group, preference_pairs, selection_stats, shortest_correct, shortest_rows
from longrl.rewards import register_scorer
from longrl.types import Prompt, Score


@register_scorer("l2s_test")
class _ParityScorer:
    """A deterministic stand-in verifier, so an untrained tiny model yields mixed groups."""

    def __init__(self, **_):
        pass

    def __call__(self, prompts, responses):
        return [Score(1.0, "ok") if len(r) % 3 else Score(0.0, "wrong") for r in responses]


def _copy_model(src, dst, noise_seed, record):
    from longrl.models.loading import load_model, save_model

    model, tok = load_model(src)
    g = torch.Generator().manual_seed(noise_seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    save_model(model, tok, dst, extra=record)
    return dst


@pytest.fixture(scope="module")
def long_short(tiny_model_dir, tmp_path_factory):
    """A long (RL-like) and a short (SFT-like) model, both descending from ``tiny_model_dir``."""
    root = tmp_path_factory.mktemp("l2s")
    base = str(tiny_model_dir.resolve())
    long = _copy_model(tiny_model_dir, root / "long", 1, {"stage": "rl", "warm": base})
    short = _copy_model(tiny_model_dir, root / "short", 2, {"stage": "short_sft", "parent": base, "root": base})
    return long, short


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


# ----------------------------------------------------------------------------- merge


@pytest.mark.parametrize("alpha", [0.5, 0.25])
def test_merge_is_the_elementwise_average(tiny_model_dir, long_short, tmp_path, capsys, alpha):
    long, short = long_short
    out = tmp_path / "merged"
    assert main(["long2short", "merge", "--long", str(long), "--short", str(short), "--alpha", str(alpha),
                 "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err  # shared base: no lineage warning
    a, b, m = _state(long), _state(short), _state(out)
    assert set(m) == set(a)
    for k in a:
        torch.testing.assert_close(m[k], alpha * a[k] + (1 - alpha) * b[k], rtol=0, atol=1e-6)
    rec = json.loads((out / "longrl.json").read_text())
    assert rec["stage"] == "merge" and rec["alpha"] == alpha
    assert rec["shared_ancestor"] == rec["root"] == str(tiny_model_dir.resolve())
    from longrl.long2short.io import root_of

    assert root_of(out) == root_of(long) == root_of(short)


def test_merge_warns_when_models_share_no_base(long_short, tmp_path, capsys):
    long, short = long_short
    stranger = tmp_path / "stranger"
    shutil.copytree(short, stranger)
    (stranger / "longrl.json").unlink()  # no record: its own root
    assert main(["long2short", "merge", "--long", str(long), "--short", str(stranger), "--out",
                 str(tmp_path / "m")]) == 0
    assert "do not share a base checkpoint" in capsys.readouterr().err


def test_merge_state_dicts_names_first_mismatching_tensor():
    from longrl.long2short.merge import merge_state_dicts

    a = {"x": torch.zeros(2), "w": torch.zeros(2, 3), "v": torch.zeros(4)}
    b = {"x": torch.ones(2), "w": torch.ones(3, 2), "v": torch.ones(5)}
    with pytest.raises(UserError, match=r"first mismatching tensor 'w'.*\(2, 3\).*\(3, 2\)"):
        merge_state_dicts(a, b, 0.5)
    with pytest.raises(UserError, match="'v' is in long but not in short"):
        merge_state_dicts({"v": torch.zeros(1)}, {"u": torch.zeros(1)}, 0.5)


def test_merge_refuses_other_architecture(long_short, tmp_path, capsys):
    long, short = long_short
    other = tmp_path / "wide"
    shutil.copytree(short, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["intermediate_size"] *= 2
    (other / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "m"
    assert main(["long2short", "merge", "--long", str(long), "--short", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "first mismatching field 'intermediate_size'" in err and "Traceback" not in err
    assert not out.exists()


def test_merge_refuses_other_vocabulary(long_short, tmp_path, capsys):
    long, short = long_short
    other = tmp_path / "swapped"
    shutil.copytree(short, other)
    tj = json.loads((other / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (other / "tokenizer.json").write_text(json.dumps(tj))
    out = tmp_path / "m"
    assert main(["long2short", "merge", "--long", str(long), "--short", str(other), "--out", str(out)]) == 2
    assert "different vocabularies: token 'a'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("alpha", ["-0.1", "1.5"])
def test_merge_refuses_alpha_outside_unit_interval(long_short, tmp_path, capsys, alpha):
    long, short = long_short
    assert main(["long2short", "merge", "--long", str(long), "--short", str(short), "--alpha", alpha,
                 "--out", str(tmp_path / "m")]) == 2
    assert "must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------- selection


def test_shortest_correct_ties_and_none():
    assert shortest_correct([9, 4, 4, 2], [True, True, True, False]) == 1  # first of the tied, wrong 2 ignored
    assert shortest_correct([3, 1], [False, False]) is None
    assert shortest_correct([], []) is None


def test_preference_pairs_on_crafted_groups():
    # no correct sample: no positive, no pairs
    assert preference_pairs([5, 9, 12], [False, False, False]) == []
    # all correct: only those at >= 1.5x the shortest are negatives; the 1.5x boundary is inclusive
    assert preference_pairs([10, 14, 15, 16, 30], [True] * 5) == [(0, 2), (0, 3), (0, 4)]
    assert preference_pairs([10, 14], [True, True]) == []
    # ties in length: the first shortest correct is the positive, its twin is no negative;
    # a wrong response must be strictly longer than the positive
    assert preference_pairs([8, 8, 8, 7, 9], [False, True, True, False, False]) == [(1, 4)]
    # a wrong response shorter than the positive is not a negative, a longer one is
    assert preference_pairs([20, 5, 21, 40], [True, False, False, True]) == [(0, 2), (0, 3)]


def test_shortest_rows_and_stats():
    p = [Prompt(id=str(i), text=f"q{i}", reference=0, task="x") for i in range(3)]
    groups = [
        Group(p[0], ["long ok", "ok", "wrong"], [7, 2, 1], [True, True, False]),
        Group(p[1], ["no", "nope"], [2, 4], [False, False]),
        Group(p[2], ["a", "bb"], [3, 6], [True, True]),
    ]
    rows = shortest_rows(groups)
    assert [(r["prompt"], r["response"], r["tokens"]) for r in rows] == [("q0", "ok", 2), ("q2", "a", 3)]
    s = selection_stats(groups)
    assert s["prompts_without_correct"] == 1 and s["prompts_all_correct"] == 1
    assert s["pairs"] == 2 and s["prompts_with_pairs"] == 2  # (ok, long ok) and (a, bb)
    assert s["tokens_mean_shortest_correct"] == 2.5


# ----------------------------------------------------------------------------- DPO


def test_dpo_loss_hand_computed_and_gradient_sign():
    chosen = torch.tensor([-1.0, -3.0], requires_grad=True)
    rejected = torch.tensor([-2.0, -1.0], requires_grad=True)
    ref_c, ref_r = torch.tensor([-1.5, -3.0]), torch.tensor([-1.5, -2.0])
    loss = dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.5)
    # pair 1: margin 0.5·(0.5 − (−0.5)) = 0.5; pair 2: 0.5·(0 − 1) = −0.5
    expected = torch.log1p(torch.exp(torch.tensor(-0.5))) + torch.log1p(torch.exp(torch.tensor(0.5)))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises chosen, lowers rejected
    torch.testing.assert_close(chosen.grad, -rejected.grad)
    torch.testing.assert_close(chosen.grad[0], -0.5 * torch.sigmoid(torch.tensor(-0.5)))


def test_dpo_loss_nll_term_hand_computed():
    """RPO's term: α · −log π(y_w)/|y_w| per pair, added to DPO; it only ever raises the chosen."""
    chosen = torch.tensor([-1.0, -3.0], requires_grad=True)
    rejected = torch.tensor([-2.0, -1.0], requires_grad=True)
    ref_c, ref_r = torch.tensor([-1.5, -3.0]), torch.tensor([-1.5, -2.0])
    plain = dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.5)
    tokens = torch.tensor([2.0, 6.0])
    loss = dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.5, nll_weight=0.4, chosen_tokens=tokens)
    torch.testing.assert_close(loss, plain + 0.4 * (1.0 / 2 + 3.0 / 6))
    loss.backward()
    base = torch.autograd.grad(dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.5), chosen)[0]
    torch.testing.assert_close(chosen.grad - base, -0.4 / tokens)  # an extra push up on each chosen
    with pytest.raises(ValueError, match="chosen_tokens"):
        dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.5, nll_weight=0.4)


def test_dpo_loss_matches_a_python_loop():
    import math

    g = torch.Generator().manual_seed(0)
    c, r, rc, rr = (-5 * torch.rand(7, generator=g, dtype=torch.float64) for _ in range(4))
    slow = sum(math.log1p(math.exp(-0.3 * ((c[i] - rc[i]) - (r[i] - rr[i])).item())) for i in range(7))
    assert abs(dpo_loss(c, r, rc, rr, 0.3).item() - slow) < 1e-12


def test_dpo_training_prefers_the_chosen_and_ignores_micro_batch_split(tiny_model_dir):
    from longrl.models.loading import load_model
    from longrl.train.dpo import DPOConfig, encode_pairs, run_dpo, sequence_logprobs

    model, tok = load_model(tiny_model_dir)
    rows = [("Use 1 2 3 to make 9.\n", "answer (1+2)*3", "plan 9 from 1 2 3\n1+2=3 3+3=6 under\ngive up"),
            ("Use 2 4 5 to make 13.\n", "answer 2*4+5", "plan 13 from 2 4 5\n2+4=6 6+5=11 under")]
    data = encode_pairs(tok, rows, 256)
    assert len(data.seqs) == 4 and data.pairs == [(0, 1), (2, 3)]
    with torch.no_grad():
        whole = sequence_logprobs(model, data.seqs, 10_000, tok.pad_token_id)
        split = sequence_logprobs(model, data.seqs, 40, tok.pad_token_id)  # one sequence per micro-batch
    torch.testing.assert_close(whole, split, rtol=0, atol=1e-5)
    stats = run_dpo(model, tok, data, DPOConfig(beta=0.5, lr=3e-3, epochs=15, batch_pairs=2), progress=False)
    with torch.no_grad():
        after = sequence_logprobs(model, data.seqs, 10_000, tok.pad_token_id)
    d = after - whole
    assert (d[[0, 2]] - d[[1, 3]] > 0).all()  # each chosen gained on its rejected against the reference
    assert stats["dpo/steps"] == 15 and stats["dpo/accuracy"] == 1.0


def test_dpo_nll_term_uses_each_chosen_length(tiny_model_dir):
    """One step from the reference: the DPO term is log 2 (margin 0) and the NLL term is the chosen
    responses' per-token NLL, so a loss built with the wrong lengths shows in ``dpo/loss``."""
    import math

    from longrl.models.loading import load_model
    from longrl.train.dpo import DPOConfig, encode_pairs, run_dpo, sequence_logprobs

    model, tok = load_model(tiny_model_dir)
    rows = [("Use 1 2 3 to make 9.\n", "answer (1+2)*3", "plan 9 from 1 2 3\n1+2=3 3+3=6 under\ngive up"),
            ("Use 2 4 5 to make 13.\n", "answer 2*4+5 and a longer tail", "no")]
    data = encode_pairs(tok, rows, 256)
    with torch.no_grad():
        ref = sequence_logprobs(model, data.seqs, 10_000, tok.pad_token_id)
    lengths = torch.tensor([float(len(s.ids) - s.loss_start) for s in data.seqs])
    chosen = [c for c, _ in data.pairs]
    stats = run_dpo(model, tok, data, DPOConfig(beta=0.5, lr=1e-3, epochs=1, batch_pairs=2, sft_weight=0.7),
                    progress=False)
    assert stats["dpo/steps"] == 1
    assert abs(stats["dpo/nll"] - float((-ref[chosen] / lengths[chosen]).mean())) < 1e-4
    assert abs(stats["dpo/loss"] - math.log(2)) < 1e-4


# ----------------------------------------------------------------------------- CLI end to end


def _prompt_file(path, rows=4):
    path.write_text("".join(json.dumps({"prompt": f"Use 1 2 {i} to make 9.\n", "answer": "x", "task": "l2s_test"})
                            + "\n" for i in range(rows)))
    return path


SAMPLE = ["--n", "4", "--max-tokens", "10", "--threads", "1", "--quiet"]


def test_shortest_selects_the_shortest_correct_and_trains(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "shortest"
    assert main(["long2short", "shortest", "--model", str(tiny_model_dir), "--data",
                 str(_prompt_file(tmp_path / "p.jsonl")), *SAMPLE, "--train", "--out", str(out)]) == 0
    assert "had no correct sample among 4" in capsys.readouterr().out
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    kept = {r["prompt_id"]: r for r in map(json.loads, (out / "shortest.jsonl").read_text().splitlines())}
    for s in samples:
        j = shortest_correct(s["tokens"], s["correct"])
        assert (j is None) == (s["prompt_id"] not in kept)
        if j is not None:
            assert kept[s["prompt_id"]]["response"] == s["responses"][j]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts_without_correct"] == sum(not any(s["correct"]) for s in samples)
    rec = json.loads((out / "longrl.json").read_text())
    assert rec["stage"] == "shortest_rs" and rec["root"] == str(tiny_model_dir.resolve())
    assert (out / "model.safetensors").is_file()


def test_dpo_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "dpo"
    assert main(["long2short", "dpo", "--model", str(tiny_model_dir), "--data",
                 str(_prompt_file(tmp_path / "p.jsonl", 6)), *SAMPLE, "--epochs", "1", "--sft-weight", "0.5",
                 "--out", str(out)]) == 0
    pairs = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["rejected_tokens"] > p["chosen_tokens"] for p in pairs)
    assert all(p["rejected_tokens"] >= 1.5 * p["chosen_tokens"] for p in pairs if p["rejected_correct"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == len(pairs) and summary["dpo"]["dpo/pairs"] == len(pairs)
    record = json.loads((out / "longrl.json").read_text())
    assert record["stage"] == "dpo" and record["sft_weight"] == 0.5


@pytest.mark.parametrize("verb", ["shortest", "dpo"])
def test_sampling_bad_input_stops_cleanly(tiny_model_dir, tmp_path, capsys, verb):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Use 1 2 3 to make 9.\\n", "answer": "x"}\n{"prompt": "no reference"}\n')
    out = tmp_path / "out"
    assert main(["long2short", verb, "--model", str(tiny_model_dir), "--data", str(bad), *SAMPLE,
                 "--out", str(out)]) == 2
    assert f"{bad}:2: missing the reference" in capsys.readouterr().err
    assert main(["long2short", verb, "--model", str(tiny_model_dir), "--data", str(bad), "--n", "1",
                 "--out", str(out)]) == 2
    assert "--n 1: need at least 2" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*"))


def test_dpo_negative_sft_weight_is_refused(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["long2short", "dpo", "--model", str(tiny_model_dir), "--data",
                 str(_prompt_file(tmp_path / "p.jsonl", 2)), *SAMPLE, "--sft-weight", "-1", "--out", str(out)]) == 2
    assert "sft_weight=-1.0: must be >= 0" in capsys.readouterr().err
    assert not out.exists()


def test_short_sft_rl_preset_and_compare(tiny_model_dir, tmp_path, capsys):
    short = tmp_path / "short"
    assert main(["long2short", "short-sft", "--base", str(tiny_model_dir), "--out", str(short), "--examples",
                 "16", "--batch-tokens", "512", "--threads", "1", "--quiet"]) == 0
    rec = json.loads((short / "longrl.json").read_text())
    assert rec["stage"] == "short_sft" and rec["parent"] == str(tiny_model_dir.resolve())

    sets = ["rl.iterations=1", "rollout.batch_prompts=2", "rollout.k=2", "rollout.max_length=8",
            "data.heldout_per_level=1", "sampling.pool_size=8", "eval.n_samples=1", "eval.greedy=false",
            "threads=1"]
    assert main(["long2short", "rl", "--model", str(tiny_model_dir), *[x for s in sets for x in ("--set", s)],
                 "--out", str(tmp_path / "runs"), "--name", "l2s", "--quiet"]) == 0
    run = tmp_path / "runs" / "l2s"
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["length_penalty"] == {"weight": 1.0, "warmup_iters": 0} and cfg["sft"]["enabled"] is False
    from longrl.long2short.io import root_of

    assert root_of(run / "checkpoints" / "iter_1") == str(tiny_model_dir.resolve())

    out = tmp_path / "cmp"
    assert main(["long2short", "compare", str(tiny_model_dir), str(short), "--labels", "long,short",
                 "--limit", "3", "--n", "1", "--max-tokens", "6", "--no-greedy", "--out", str(out),
                 "--threads", "1", "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "correct/1k tok" in table and "short" in table
    summary = json.loads((out / "compare.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["long", "short"]
    assert (out / "compare.png").stat().st_size > 0
