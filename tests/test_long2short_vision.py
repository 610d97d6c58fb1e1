"""long2short with image prompts (issue 26): shortest rejection sampling, DPO and merging on a tiny VLM."""

import json
from dataclasses import replace

import pytest
import torch

from longrl.cli import main
from longrl.errors import UserError
from longrl.long2short.select import shortest_correct
from longrl.models.tiny import TinyModelConfig, TinyVLMConfig
from longrl.rewards import register_scorer
from longrl.tasks import render, scenes
from longrl.types import Score

TASK = "l2s_vision_test"


@register_scorer(TASK)
class _ParityScorer:
    """A deterministic stand-in verifier, so an untrained tiny VLM yields mixed groups."""

    def __init__(self, **_):
        pass

    def __call__(self, prompts, responses):
        return [Score(1.0, "ok") if len(r) % 3 else Score(0.0, "wrong") for r in responses]


def _build_vlm(out, seed=0):
    from longrl.models.vision import build_tiny_vlm

    lm = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=seed)
    corpus = [ex[0] + ex[1] for ex in render.sft_examples(0, 200)]
    return build_tiny_vlm(out, TinyVLMConfig(vision_hidden_size=32, vision_intermediate_size=64, reading_steps=0), lm, corpus)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    return _build_vlm(tmp_path_factory.mktemp("l2s_vlm"))


def _image_prompts():
    """Drawn countdown problems (one text, different images) and scenes, scored by the parity scorer."""
    return [replace(p, task=TASK) for p in render.heldout_prompts(1)[:3] + scenes.heldout_prompts(1)[:2]]


def _prompt_file(path):
    from longrl.data.sources import prompt_row

    path.write_text("".join(json.dumps(prompt_row(p)) + "\n" for p in _image_prompts()))
    return path


SAMPLE = ["--n", "4", "--max-tokens", "8", "--threads", "1", "--quiet"]


def test_shortest_writes_rows_with_images_and_trains(vlm_dir, tmp_path):
    from longrl.data.sources import load_sft_examples
    from longrl.models.loading import load_model
    from longrl.models.vision import load_processor

    out = tmp_path / "shortest"
    assert main(["long2short", "shortest", "--model", str(vlm_dir), "--data", str(_prompt_file(tmp_path / "p.jsonl")),
                 *SAMPLE, "--train", "--epochs", "1", "--out", str(out)]) == 0
    images = {p.id: p.images for p in _image_prompts()}
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (out / "shortest.jsonl").read_text().splitlines()]
    assert len(rows) == sum(shortest_correct(s["tokens"], s["correct"]) is not None for s in samples) > 0
    from longrl.data.images import image_bytes

    assert all([image_bytes(b, None) for b in s["images"]] == images[s["prompt_id"]] for s in samples)
    examples = load_sft_examples(out / "shortest.jsonl")
    assert len(examples) == len(rows)
    for r, (prompt, response, imgs) in zip(rows, examples):  # each row keeps its own prompt's image
        assert prompt == r["prompt"] and response == r["response"] and imgs == images[r["prompt_id"]]
    model, _ = load_model(out)  # the fine-tuned VLM is saved with its processor
    assert type(model).__name__ == "LlavaForConditionalGeneration" and load_processor(out) is not None


def _pairs(images_of):
    """Two pairs on drawn countdown prompts: the same prompt text, the images of ``images_of``."""
    return [(render.PROMPT_TEXT, "answer 1+2", "plan 9 from 1 2 3\nno", images_of[0]),
            (render.PROMPT_TEXT, "answer 2*4", "plan 13\n2+4=6 no", images_of[1])]


def test_dpo_pairs_carry_the_pixels_into_the_forward(vlm_dir):
    from longrl.models.loading import load_model
    from longrl.models.vision import load_processor
    from longrl.train.dpo import DPOConfig, encode_pairs, run_dpo, sequence_logprobs

    model, tok = load_model(vlm_dir)
    proc = load_processor(vlm_dir)
    drawn = [p.images for p in render.heldout_prompts(1)[:2]]
    data = encode_pairs(tok, _pairs(drawn), 512, processor=proc)
    # one prompt text, two images: two prompts, four sequences; a pair's two share the prompt's pixels
    assert len(data.seqs) == 4 and data.pairs == [(0, 1), (2, 3)]
    for c, r in data.pairs:
        assert data.seqs[c].mm is data.seqs[r].mm and set(data.seqs[c].mm) == {"pixel_values"}
    assert not torch.equal(data.seqs[0].mm["pixel_values"], data.seqs[2].mm["pixel_values"])
    swapped = encode_pairs(tok, _pairs(drawn[::-1]), 512, processor=proc)
    assert [s.ids for s in swapped.seqs] == [s.ids for s in data.seqs]  # only the pixels differ
    with torch.no_grad():
        logp = sequence_logprobs(model, data.seqs, 10_000, tok.pad_token_id)
        split = sequence_logprobs(model, data.seqs, 60, tok.pad_token_id)  # one sequence per micro-batch
        other = sequence_logprobs(model, swapped.seqs, 10_000, tok.pad_token_id)
    torch.testing.assert_close(logp, split, rtol=0, atol=1e-5)
    assert (logp - other).abs().min() > 1e-6  # the image reaches every sequence's log-prob
    stats = run_dpo(model, tok, data, DPOConfig(beta=0.5, lr=1e-2, epochs=2, batch_pairs=2), progress=False)
    assert stats["dpo/steps"] == 2 and stats["dpo/grad_norm"] > 0
    fresh, _ = load_model(vlm_dir)  # the pixels' path trained: the vision tower and projector moved
    moved = {n for (n, a), b in zip(model.named_parameters(), fresh.parameters()) if not torch.equal(a, b)}
    assert any("vision_tower" in n for n in moved) and any("multi_modal_projector" in n for n in moved)


def test_dpo_refuses_images_for_a_text_model(tiny_model_dir):
    from longrl.models.loading import load_model
    from longrl.train.dpo import encode_pairs

    _, tok = load_model(tiny_model_dir)
    drawn = [p.images for p in render.heldout_prompts(1)[:2]]
    with pytest.raises(UserError, match="pairs: pair 1 has 1 image.*text-only"):
        encode_pairs(tok, _pairs(drawn), 512)


def test_dpo_cli_on_image_prompts(vlm_dir, tmp_path):
    import torch

    from longrl.models.loading import load_model

    out = tmp_path / "dpo"
    assert main(["long2short", "dpo", "--model", str(vlm_dir), "--data", str(_prompt_file(tmp_path / "p.jsonl")),
                 *SAMPLE, "--epochs", "1", "--lr", "1e-2", "--freeze-vision-tower", "--out", str(out)]) == 0
    start, _ = load_model(vlm_dir)
    trained, _ = load_model(out)
    moved = {n for (n, a), (_, b) in zip(start.named_parameters(), trained.named_parameters()) if not torch.equal(a, b)}
    assert moved and not any("vision_tower" in n for n in moved)
    images = {p.id: p.images for p in _image_prompts()}
    pairs = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert pairs
    from longrl.data.images import row_images

    assert all(row_images(r, None) == images[r["prompt_id"]] for r in pairs)
    from longrl.models.vision import load_processor

    assert load_processor(out) is not None


def test_freezing_a_text_models_tower_is_refused_before_sampling(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "dpo"
    assert main(["long2short", "dpo", "--model", str(tiny_model_dir), "--data", "countdown", "--limit", "2",
                 *SAMPLE, "--freeze-vision-tower", "--out", str(out)]) == 2
    assert "no vision tower" in capsys.readouterr().err and not out.exists()


def test_merge_two_vlms_and_refuse_a_text_model(vlm_dir, tiny_model_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    from longrl.models.loading import load_model
    from longrl.models.vision import encode_prompt_mm, load_processor

    other = _build_vlm(tmp_path / "other", seed=1)
    out = tmp_path / "merged"
    assert main(["long2short", "merge", "--long", str(vlm_dir), "--short", str(other), "--alpha", "0.25",
                 "--out", str(out)]) == 0
    a, b, m = (load_file(str(d / "model.safetensors")) for d in (vlm_dir, other, out))
    assert set(m) == set(a) and any("vision_tower" in k for k in m)
    for k in a:
        torch.testing.assert_close(m[k], 0.25 * a[k] + 0.75 * b[k], rtol=0, atol=1e-6)
    model, tok = load_model(out)
    proc = load_processor(out)
    p = _image_prompts()[0]
    enc = encode_prompt_mm(tok, proc, p)
    assert model(input_ids=torch.tensor([enc.ids]), pixel_values=enc.mm["pixel_values"]).logits.isfinite().all()

    bad = tmp_path / "bad"
    assert main(["long2short", "merge", "--long", str(vlm_dir), "--short", str(tiny_model_dir), "--out",
                 str(bad)]) == 2
    err = capsys.readouterr().err
    assert (f"cannot merge a vision-language model ({vlm_dir}) with a text-only model ({tiny_model_dir})" in err
            and "Traceback" not in err)
    assert not bad.exists()


def test_short_sft_compare_and_rl_on_a_vlm(vlm_dir, tmp_path, capsys):
    """The other verbs take the VLM too: short-SFT on rows with images (as ``shortest`` writes them),
    compare on image prompts, and the long2short RL preset on the drawn countdown task."""
    from longrl.data.sources import prompt_row
    from longrl.models.vision import load_processor

    rows = [prompt_row(p) | {"response": "answer 1+2"} for p in _image_prompts()]
    data = tmp_path / "short.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    short = tmp_path / "short"
    assert main(["long2short", "short-sft", "--base", str(vlm_dir), "--data", str(data), "--out", str(short),
                 "--batch-tokens", "512", "--threads", "1", "--quiet"]) == 0
    assert load_processor(short) is not None

    out = tmp_path / "cmp"
    assert main(["long2short", "compare", str(vlm_dir), str(short), "--data", str(_prompt_file(tmp_path / "p.jsonl")),
                 "--n", "1", "--max-tokens", "4", "--no-greedy", "--out", str(out), "--threads", "1", "--quiet"]) == 0
    summary = json.loads((out / "compare.json").read_text())
    assert summary["prompts"] == 5 and all(m["tokens_mean"] > 0 for m in summary["models"])

    sets = ["data.task=countdown_image", "rl.iterations=1", "rollout.batch_prompts=2", "rollout.k=2",
            "rollout.max_length=6", "data.heldout_per_level=1", "sampling.pool_size=8", "eval.n_samples=1",
            "eval.greedy=false", "threads=1"]
    assert main(["long2short", "rl", "--model", str(vlm_dir), *[x for s in sets for x in ("--set", s)],
                 "--out", str(tmp_path / "runs"), "--name", "l2s", "--quiet"]) == 0
    assert load_processor(tmp_path / "runs" / "l2s" / "checkpoints" / "iter_1") is not None
