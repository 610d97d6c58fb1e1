"""The hf rollout engine on a tiny random Llama and its small tokenizer (STYLE §6)."""

import pytest
import torch

from longrl.models import load_model
from longrl.rollout.hf import HFEngine
from longrl.types import GenRequest, SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    return HFEngine(model, [tok.eos_token_id], tok.pad_token_id), tok


def _prompts(tok):
    return [tok(t)["input_ids"] for t in ["Use 3 4 5 to make 27.\n", "Use 10 2 to make 8.\n", "plan"]]


def test_seeds_reproduce_independently_of_batch(engine):
    eng, tok = engine
    p = _prompts(tok)
    params = SamplingParams(temperature=1.0)
    a = eng.generate([GenRequest(x, 12, seed=7 + i) for i, x in enumerate(p)], params)
    b = eng.generate([GenRequest(p[1], 12, seed=8)], params)
    assert a[1].token_ids == b[0].token_ids
    c = eng.generate([GenRequest(p[1], 12, seed=9)], params)
    assert c[0].token_ids != b[0].token_ids  # another seed, another sample (random model, 12 tokens)


def test_greedy_is_deterministic(engine):
    eng, tok = engine
    reqs = [GenRequest(x, 10) for x in _prompts(tok)]
    a = eng.generate(reqs, SamplingParams(temperature=0))
    b = eng.generate(reqs[::-1], SamplingParams(temperature=0))[::-1]
    assert [r.token_ids for r in a] == [r.token_ids for r in b]


def test_stop_reasons(engine):
    eng, tok = engine
    p = _prompts(tok)[0]
    r = eng.generate([GenRequest(p, 5)], SamplingParams(temperature=0))[0]
    assert r.stop_reason == "max_length" and len(r.token_ids) == 5
    first = r.token_ids[0]
    stopper = HFEngine(eng.model, [first], tok.pad_token_id)
    r2 = stopper.generate([GenRequest(p, 5)], SamplingParams(temperature=0))[0]
    assert r2.stop_reason == "eos" and r2.token_ids == [first]


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_logprobs_match_a_separate_forward(engine, temperature):
    eng, tok = engine
    p = _prompts(tok)
    res = eng.generate([GenRequest(x, 16, seed=i) for i, x in enumerate(p)], SamplingParams(temperature))
    for x, r in zip(p, res):
        ids = torch.tensor([x + r.token_ids])
        with torch.no_grad():
            logits = eng.model(ids).logits[0, len(x) - 1 : -1].float()
        logp = torch.log_softmax(logits / (temperature or 1.0), dim=-1)
        ref = logp.gather(1, torch.tensor(r.token_ids)[:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor(r.logprobs), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("top_p", [0.5, 0.9])
def test_top_p_logprobs_are_renormalised(engine, top_p):
    """Every sampled token lies in the top-p nucleus of its step, and its recorded log-prob is that of the
    nucleus renormalised: log p(t) - log(mass of the nucleus), computed here from a separate forward."""
    eng, tok = engine
    p = _prompts(tok)[0]
    res = eng.generate([GenRequest(p, 12, seed=s) for s in range(4)], SamplingParams(1.0, top_p=top_p))
    raised = 0
    for r in res:
        ids = torch.tensor([p + r.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(eng.model(ids).logits[0, len(p) - 1 : -1].double(), dim=-1)
        for t, (token, got) in enumerate(zip(r.token_ids, r.logprobs)):
            probs, order = logp[t].exp().sort(descending=True)
            kept = int(((probs.cumsum(0) - probs) < top_p).sum())  # smallest set with mass >= top_p
            nucleus = order[:kept]
            assert token in nucleus.tolist()
            want = float(logp[t, token] - torch.logsumexp(logp[t, nucleus], 0))
            assert got == pytest.approx(want, abs=1e-4)
            raised += kept < logp.shape[-1]
    assert raised > 0  # the nucleus was smaller than the vocabulary somewhere: the test measured something


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_continuation_from_a_prefix_equals_uninterrupted(engine, temperature):
    eng, tok = engine
    params = SamplingParams(temperature)
    p = _prompts(tok)[0]
    whole = eng.generate([GenRequest(p, 12, seed=11)], params)[0]
    first = eng.generate([GenRequest(p, 5, seed=11)], params)[0]
    rest = eng.generate([GenRequest(p + first.token_ids, 7, seed=11, response_offset=5)], params)[0]
    assert first.token_ids + rest.token_ids == whole.token_ids
    assert first.stop_reason == "max_length"


def test_preallocated_cache_matches_transformers_dynamic_cache():
    """In-place KV buffers return what concatenation would: growth, dropped and repeated rows, crop, reset."""
    from transformers.cache_utils import DynamicLayer

    from longrl.rollout.hf import _PreallocatedLayer

    g = torch.Generator().manual_seed(0)
    ours, ref = _PreallocatedLayer(capacity=5), DynamicLayer()
    plan = [(None, 3), (None, 1), (None, 2), ([0, 2, 3, 5], 1), ([1, 1, 0, 3, 2], 3), ("crop", 2), ([4, 0], 1)]
    for rows, new in plan:
        if rows == "crop":
            ours.crop(-2)
            ref.crop(-2)
        elif rows is not None:
            ours.batch_select_indices(torch.tensor(rows))
            ref.batch_select_indices(torch.tensor(rows))
        b = 6 if not ref.is_initialized else ref.keys.shape[0]
        k, v = torch.randn(b, 2, new, 4, generator=g), torch.randn(b, 3, new, 4, generator=g)
        got, want = ours.update(k, v), ref.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert ours.get_seq_length() == ref.get_seq_length()
    assert ours._k.shape[-2] >= 11  # grew past its capacity of 5
    ours.reset()
    k = torch.randn(2, 2, 1, 4, generator=g)
    assert torch.equal(ours.update(k, k)[0], k)  # nothing stale after a reset


def test_shared_prompts_are_sampled_as_if_alone(engine):
    """The k samples of a prompt share one prefill; each still equals its request generated alone."""
    eng, tok = engine
    p = _prompts(tok)
    order = [0, 1, 0, 2, 1, 0]
    for params in (SamplingParams(temperature=1.0), SamplingParams(temperature=0)):
        together = eng.generate([GenRequest(p[j], 10, seed=40 + i) for i, j in enumerate(order)], params)
        for i, j in enumerate(order):
            (alone,) = eng.generate([GenRequest(p[j], 10, seed=40 + i)], params)
            assert together[i].token_ids == alone.token_ids
            torch.testing.assert_close(together[i].logprobs, alone.logprobs, rtol=0, atol=1e-5)


def test_kv_buffers_growing_during_decoding_change_nothing(engine, monkeypatch):
    """Buffers that start two tokens past the prompt and double: the same tokens and log-probs."""
    import longrl.rollout.hf as hf

    eng, tok = engine
    reqs = [GenRequest(x, 14, seed=3 + i) for i, x in enumerate(_prompts(tok))]
    params = SamplingParams(temperature=1.0)
    want = eng.generate(reqs, params)
    monkeypatch.setattr(hf, "FIRST_STRETCH", 2)
    got = eng.generate(reqs, params)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g.logprobs, w.logprobs, rtol=0, atol=1e-6)
