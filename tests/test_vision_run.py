"""Image prompts through the whole run: the tiny VLM's warm-up, joint text + image RL, eval per
modality, checkpoints with their processor, resume, and the refusals that come before anything is written."""

import json

import pytest

from longrl.config import load_config
from longrl.errors import UserError
from longrl.tasks import countdown, render, scenes
from longrl.train.loop import content_key, read_prompts
from test_cli import SMALL, longrl

VISION = [*SMALL, "model.vision=true", "model.tiny_vision.vision_hidden_size=32",
          "model.tiny_vision.vision_intermediate_size=64", "model.tiny_vision.vision_layers=1",
          "model.tiny_vision.reading_steps=20", "rollout.max_length=16", "data.heldout_per_level=1",
          "sampling.pool_size=20", "sft.examples=24"]
MIX = "data.mix={countdown: 0.5, countdown_image: 0.5}"


def _sets(extra=()):
    return [x for s in [*VISION, *extra] for x in ("--set", s)]


def test_joint_text_and_image_run_reports_each_modality_saves_the_processor_and_resumes(tmp_path):
    out = str(tmp_path / "runs")
    r = longrl("train", *_sets([MIX, "rl.iterations=1", "rl.lr_final=null"]), "--out", out, "--name", "v",
               "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "v"
    ev = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert {"eval/modality/image/pass1", "eval/modality/text/pass1", "eval/task/countdown_image/pass1",
            "eval/task/countdown/pass1"} <= set(ev[-1])
    assert ev[-1]["eval/modality/image/prompts"] == ev[-1]["eval/modality/text/prompts"] == 3
    ckpt = run / "checkpoints" / "iter_1"
    assert (ckpt / "processor_config.json").is_file()
    from longrl.models.loading import load_model
    from longrl.models.vision import load_processor

    model, _ = load_model(ckpt)
    assert type(model).__name__ == "LlavaForConditionalGeneration" and load_processor(ckpt) is not None
    res = longrl("train", "--resume", str(run), "--set", "rl.iterations=2", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    iters = [json.loads(x)["iter"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert iters == [1, 2]


def test_image_prompts_on_a_text_model_are_refused_before_anything_is_written(tmp_path):
    sets = [x for s in [*SMALL, "data.task=countdown_image"] for x in ("--set", s)]
    r = longrl("train", *sets, "--out", str(tmp_path / "runs"), "--name", "t", cwd=tmp_path)
    assert r.returncode == 2
    assert "countdown_image" in r.stderr and "text-only" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs" / "t").exists()


def test_mix_pools_each_source_in_its_share_and_holds_every_task_out():
    cfg = load_config(None, [MIX.replace("0.5, countdown_image: 0.5", "1, scenes: 3"), "sampling.pool_size=400",
                             "data.heldout_per_level=5"])
    pool, held, _ = read_prompts(cfg)
    assert sum(p.task == "countdown" for p in pool) == 100 and sum(p.task == "scenes" for p in pool) == 300
    assert sorted({p.task for p in held}) == ["countdown", "scenes"] and len(held) == 30
    assert not {content_key(p) for p in pool} & {content_key(p) for p in held}


@pytest.mark.parametrize("task", [countdown, render, scenes])
def test_a_smaller_held_out_set_is_part_of_what_training_skips(task):
    full = {content_key(p) for p in task.heldout_prompts()}
    small = task.heldout_prompts(20)
    assert len(small) == 60 and {content_key(p) for p in small} <= full
    stream = task.train_prompts(0, task.LEVELS)
    assert not {content_key(next(stream)) for _ in range(3000)} & full


@pytest.mark.parametrize("sets, message", [
    ([MIX, "data.task=scenes"], "leave data.task unset"),
    (["data.mix={countdown: 0}"], "shares must be positive"),
    (["data.heldout_per_level=151"], "1 to 150"),
    (["model.vision=true", "model.tiny_vision.patch_size=7"], "not a multiple"),
])
def test_bad_vision_and_mix_settings_are_named(sets, message):
    with pytest.raises(UserError, match=message):
        load_config(None, sets)


def test_eval_blank_image_control_and_per_task_table(tmp_path):
    from longrl.models.tiny import TinyModelConfig, TinyVLMConfig
    from longrl.models.vision import build_tiny_vlm

    model = build_tiny_vlm(tmp_path / "vlm", TinyVLMConfig(vision_hidden_size=32, vision_intermediate_size=64, reading_steps=0),
                           TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                           [ex[0] + ex[1] for ex in render.sft_examples(0, 100)])
    args = ["eval", "--model", str(model), "--bench", "countdown_image", "--limit", "3", "--n", "1",
            "--max-tokens", "8", "--no-greedy"]
    r = longrl(*args, "--blank-images", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((model / "eval-countdown_image-blank" / "eval_summary.json").read_text())
    assert summary["prompts"] == 3 and summary["benchmark"] == "countdown_image-blank"
    text = longrl("eval", "--model", str(model), "--bench", "countdown", "--limit", "1", "--blank-images",
                  cwd=tmp_path)
    assert text.returncode == 2 and "carry no images" in text.stderr


def test_curate_dedup_tells_image_prompts_with_the_same_text_apart():
    from longrl.data.curate.dedup import deduplicate

    prompts = render.heldout_prompts(2)  # six prompts, one text, six images
    res = deduplicate(prompts + prompts[:1])
    assert [p.id for p in res.kept] == [p.id for p in prompts]
    assert [d.prompt.id for d in res.dropped] == [prompts[0].id]


def test_a_tiny_qwen2_vl_trains_an_iteration_on_image_prompts_and_its_checkpoint_reloads(tmp_path):
    """Qwen2-VL's M-RoPE positions and image_grid_thw through rollout, update, checkpoint and reload."""
    import torch

    from longrl.models.loading import load_model
    from longrl.models.vision import build_tiny_qwen2vl, load_processor

    model_dir = build_tiny_qwen2vl(tmp_path / "qwen")
    sets = ["model.path=" + str(model_dir), "model.chat_template=true", "sft.enabled=false",
            "data.task=countdown_image", "data.heldout_per_level=1", "sampling.pool_size=8", "rollout.batch_prompts=2",
            "rollout.k=2", "rollout.max_length=8", "rl.iterations=1", "eval.n_samples=1", "checkpoint.every=1",
            "rl.lr=1e-2", "rl.lr_final=null", "rl.mask_truncated=false", "threads=1"]
    r = longrl("train", *[x for s in sets for x in ("--set", s)], "--out", str(tmp_path / "runs"), "--name", "q",
               "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "q" / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["mismatch/logp_abs_max"] < 1e-4  # the engine's log-probs are the trainer's, pixels and all
    ckpt = tmp_path / "runs" / "q" / "checkpoints" / "iter_1"
    trained, _ = load_model(ckpt)
    start, _ = load_model(model_dir)
    assert load_processor(ckpt) is not None
    moved = [n for (n, a), (_, b) in zip(trained.named_parameters(), start.named_parameters()) if not torch.equal(a, b)]
    assert any("visual" in n for n in moved) and any("language_model" in n for n in moved)


def test_blank_image_control_on_a_trained_model_falls_to_chance(tmp_path):
    """A tiny VLM warmed up to say which quadrant holds a black square answers from the pixels: right
    on real images, at chance (1 in 4) on the blank-image control."""
    import io
    import random

    from PIL import Image

    from longrl.config import SFTConfig
    from longrl.eval.runner import evaluate
    from longrl.models.loading import load_model, stop_token_ids
    from longrl.models.tiny import TinyModelConfig, TinyVLMConfig
    from longrl.models.vision import build_tiny_vlm, load_processor
    from longrl.rewards.compose import build_router
    from longrl.rollout.hf import HFEngine
    from longrl.train.sft import encode_examples, run_sft
    from longrl.types import Prompt

    rng = random.Random(0)

    def example():
        q = rng.randrange(4)
        x, y = q % 2 * 48, q // 2 * 48
        im = Image.new("RGB", (96, 96), (255, 255, 255))
        im.paste((0, 0, 0), (x + 8, y + 8, x + 40, y + 40))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return "<image>\nWhich quadrant?\n", str(q + 1), [buf.getvalue()]

    train = [example() for _ in range(2000)]
    path = build_tiny_vlm(tmp_path / "vlm", TinyVLMConfig(vision_hidden_size=64, vision_intermediate_size=128, reading_steps=0),
                          TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128),
                          ["Which quadrant? answer 1 2 3 4"] * 50)
    model, tok = load_model(path)
    processor = load_processor(path)
    seqs = encode_examples(tok, [(p, f"answer {a}", im) for p, a, im in train], 512, processor=processor)
    run_sft(model, tok, seqs, SFTConfig(batch_tokens=1024, lr=2e-3, epochs=2), progress=False)
    held = [Prompt(f"q{i}", p, {"answer": a}, "scenes", images=im) for i, (p, a, im) in
            enumerate(example() for _ in range(40))]
    engine = HFEngine(model, stop_token_ids(tok, model), tok.pad_token_id)
    router = build_router(None)
    real = evaluate(engine, tok, held, router, n=1, temperature=1.0, max_new_tokens=8, greedy=True,
                    processor=processor)
    blank = evaluate(engine, tok, render.blank_images(held), router, n=1, temperature=1.0, max_new_tokens=4,
                     greedy=True, processor=processor)
    assert real.greedy >= 0.9, real.greedy
    assert blank.greedy <= 0.5, blank.greedy  # one guessed quadrant for every blank image: ~1/4
