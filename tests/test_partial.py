"""Partial rollouts: segments across iterations, the replay buffer, the repeat detector (DESIGN §5)."""

import json

import pytest
import torch

from longrl.errors import UserError
from longrl.models import load_model
from longrl.rollout.hf import HFEngine
from longrl.rollout.repetition import RepeatDetector, first_repetition
from longrl.train.batch import Seq, micro_batches, token_logprobs
from longrl.train.partial import ReplayBuffer, loss_start, segments, vocab_signature
from longrl.types import GenRequest, GenResult, Prompt, SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    return HFEngine(model, [tok.eos_token_id], tok.pad_token_id), tok


def _prompts(n):
    return [Prompt(id=f"p{i}", text=f"Use {i} {i + 2} {i + 5} to make {3 * i + 7}.\n", reference=None,
                   task="countdown") for i in range(n)]


def _run_buffer(eng, tok, budget, params, iterations=20, max_length=40, k=3):
    """Drive the buffer as the trainer does, with frozen weights; return the finished trajectories."""
    buf = ReplayBuffer(k=k, max_length=max_length, budget=budget)
    buf.start(_prompts(2), 0, lambda p: tok(p.text)["input_ids"], lambda g, j: 1000 * g + j)
    done = []
    for it in range(iterations):
        trajs, reqs = buf.requests()
        if not trajs:
            break
        for t, res in zip(trajs, eng.generate(reqs, params)):
            buf.extend(t, res, it)
        done += [t for g in buf.release() for t in g.trajs]
    return sorted(done, key=lambda t: (t.group_id, t.sample_index))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_segmented_equals_uninterrupted(engine, temperature):
    eng, tok = engine
    params = SamplingParams(temperature=temperature)
    whole = _run_buffer(eng, tok, None, params)
    parts = _run_buffer(eng, tok, 7, params)
    assert [t.response_ids for t in parts] == [t.response_ids for t in whole]
    assert [t.stop_reason for t in parts] == [t.stop_reason for t in whole]
    for a, b in zip(parts, whole):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    long = [t for t in parts if len(t.response_ids) > 7]
    assert long and all(len(segments(t.versions)) > 1 for t in long)  # really made in several pieces
    assert all(len(segments(t.versions)) == 1 for t in whole)


def _result(n, stop):
    return GenResult(list(range(10, 10 + n)), [-0.5] * n, stop)


def test_group_released_only_when_all_k_finished():
    buf = ReplayBuffer(k=2, max_length=30, budget=5)
    buf.start(_prompts(1), 0, lambda p: [1, 2], lambda g, j: j)
    a, b = buf.requests()[0]
    assert [r.max_new_tokens for r in buf.requests()[1]] == [5, 5]
    assert buf.extend(a, _result(3, "eos"), 0) == "eos"
    assert buf.extend(b, _result(5, "max_length"), 0) == "budget"  # cut by the budget, not the cap
    assert buf.release() == [] and len(buf.in_flight()) == 1
    (req,) = buf.requests()[1]
    assert req.prompt_ids == [1, 2] + b.response_ids and req.response_offset == 5 and req.seed == 1
    buf.extend(b, _result(2, "eos"), 1)
    (g,) = buf.release()
    assert [t.num_tokens for t in g.trajs] == [3, 7] and g.trajs[1].versions == [0] * 5 + [1] * 2
    assert not buf.groups


def test_overall_cap_gives_max_length_and_last_allowance_is_what_is_left():
    buf = ReplayBuffer(k=2, max_length=12, budget=5)
    buf.start(_prompts(1), 0, lambda p: [1], lambda g, j: j)
    t = buf.requests()[0][0]
    for it, want in enumerate([5, 5, 2]):
        req = next(r for x, r in zip(*buf.requests()) if x is t)
        assert req.max_new_tokens == want
        stop = buf.extend(t, _result(want, "max_length"), it)
    assert stop == "max_length" and t.num_tokens == 12


def test_loss_segments_last_zeroes_earlier_segments(engine):
    eng, tok = engine
    buf = ReplayBuffer(k=2, max_length=30, budget=4)
    buf.start(_prompts(1), 0, lambda p: [5, 6, 7], lambda g, j: j)
    t = buf.requests()[0][0]
    buf.extend(t, _result(4, "max_length"), 0)
    buf.extend(t, _result(3, "eos"), 1)
    assert loss_start(t, "all") == 3 and loss_start(t, "last") == 3 + 4
    seqs = [Seq(t.prompt_ids + t.response_ids, loss_start(t, mode), 1.0, index=i)
            for i, mode in enumerate(["last", "all"])]
    (b,) = micro_batches(seqs, 10_000, tok.pad_token_id)
    last, full = b.loss_mask[b.index.tolist().index(0)], b.loss_mask[b.index.tolist().index(1)]
    # targets are ids[1:]: response tokens sit at target positions 2..8; the first segment is 2..5
    assert last.tolist()[:6] == [0.0] * 6 and last.tolist()[6:9] == [1.0] * 3
    assert full.tolist()[2:9] == [1.0] * 7
    logp = token_logprobs(eng.model, b)
    row = b.index.tolist().index(0)
    assert torch.all(logp[row, :6] == 0) and torch.all(logp[row, 6:9] != 0)


def test_staleness_cap_drops_and_frees_the_prompt():
    buf = ReplayBuffer(k=2, max_length=100, budget=5, max_staleness=2)
    buf.start(_prompts(2), 0, lambda p: [1], lambda g, j: j)
    for t in buf.requests()[0][:2]:  # group 0 finishes, group 1 never does
        buf.extend(t, _result(2, "eos"), 0)
    for it in range(3):
        assert buf.drop_stale(it) == []
        for t in buf.in_flight():
            buf.extend(t, _result(5, "max_length"), it)
    (g,) = buf.drop_stale(3)
    assert g.prompt_id == "p1" and buf.prompt_ids() == {"p0"}  # p0 still waits to be trained on


def test_buffer_round_trip_and_vocabulary_check(engine):
    eng, tok = engine
    buf = ReplayBuffer(k=2, max_length=30, budget=4)
    buf.start(_prompts(2), 3, lambda p: [1, 2], lambda g, j: 7 * g + j)
    for t in buf.requests()[0]:
        buf.extend(t, _result(4, "max_length"), 3)
    sig = vocab_signature(tok, eng.model)
    state = json.loads(json.dumps(buf.state_dict(sig)))
    back = ReplayBuffer(k=2, max_length=30, budget=4)
    back.load_state_dict(state, sig)
    assert back.state_dict(sig) == buf.state_dict(sig)
    assert [r.__dict__ for r in back.requests()[1]] == [r.__dict__ for r in buf.requests()[1]]
    with pytest.raises(UserError, match="another tokenizer or model vocabulary"):
        ReplayBuffer(k=2, max_length=30, budget=4).load_state_dict(state, "0123456789abcdef", "ckpt/iter_3")


# ------------------------------------------------------------------ the repeat detector


@pytest.mark.parametrize("tokens,fires_at", [
    ([9, 8] + [1, 2, 3] * 6, 2 + 12),  # a 3-gram copied until the 12-token window is periodic
    ([5] * 20, 12),  # one token over and over
    ([1, 2, 3, 4] * 2 + [1, 2, 3, 5] + [1, 2, 3, 4], None),  # near-repeat: one token differs
    ([1, 2, 3, 4, 5, 6, 7] * 3, None),  # period 7 is longer than max_period
    (list(range(30)), None),
])
def test_repeat_detector(tokens, fires_at):
    assert first_repetition(tokens, max_period=4, window=12) == fires_at
    det = RepeatDetector(4, 12, [[]])
    fired = next((i + 1 for i, x in enumerate(tokens) if det.push(torch.tensor([x]))[0]), None)
    assert fired == fires_at


def test_repeat_detector_counts_earlier_segments_and_engine_stops(engine):
    det = RepeatDetector(2, 8, [[4, 7, 4, 7, 4, 7], []])
    assert det.push(torch.tensor([4, 4])).tolist() == [False, False]
    assert det.push(torch.tensor([7, 4])).tolist() == [True, False]  # 8 periodic tokens over two segments
    eng, tok = engine
    params = SamplingParams(temperature=0.0, repeat_max_period=8, repeat_window=16)
    prompt = tok("Use 3 4 5 to make 27.\n")["input_ids"]
    (free,) = eng.generate([GenRequest(prompt, 120)], SamplingParams(temperature=0.0))
    cut = first_repetition(free.token_ids, 8, 16)
    (res,) = eng.generate([GenRequest(prompt, 120)], params)
    if cut is None:  # the random model did not loop: nothing to stop
        assert res.token_ids == free.token_ids
    else:
        assert res.stop_reason == "repetition" and res.token_ids == free.token_ids[:cut]


def test_builtin_traces_never_trigger_the_detector(engine):
    """Correct long-CoT traces (retries, 'wait' slips) are not repeats at period <= 16, window 48."""
    from longrl.tasks import countdown

    _, tok = engine
    for prompt, trace in countdown.sft_examples(5, 600, give_up_prob=0.5):
        ids = tok(trace)["input_ids"]
        assert first_repetition(ids, 16, 48) is None, trace


@pytest.mark.parametrize("sets,msg", [
    (["partial.enabled=true", "partial.budget=0"], "budget must be positive"),
    (["partial.enabled=true", "partial.budget=500", "rollout.max_length=192"], "larger than rollout.max_length"),
    (["partial.enabled=true", "partial.loss_segments=first"], "choose last or all"),
    (["rollout.repeat_max_period=8", "rollout.repeat_window=8"], "must exceed"),
])
def test_bad_partial_config(sets, msg):
    from longrl.config import load_config

    with pytest.raises(UserError, match=msg):
        load_config("quickstart", sets).validate()
