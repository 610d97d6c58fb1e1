"""Built-in visual tasks (countdown drawn, scenes) and the built-in task registry."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
import subprocess
import sys
from collections import Counter

import pytest
from PIL import Image

from longrl.config import RunConfig
from longrl.errors import UserError
from longrl.eval.benchmarks import benchmark_names, benchmark_table, load_benchmark
from longrl.rewards import get_scorer
from longrl.tasks import countdown, render, scenes
from longrl.tasks.registry import get_task, is_builtin, task_names


def _pixels(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG"
    return im.convert("RGB")


# --------------------------------------------------------------------------- countdown_image


def test_countdown_image_heldout_maps_one_to_one_onto_countdown_and_hides_the_numbers():
    text, drawn = countdown.heldout_prompts(20), render.heldout_prompts(20)
    assert [p.id.split("-", 1)[1] for p in text] == [p.id.split("-", 1)[1] for p in drawn]
    for t, d in zip(text, drawn):
        assert d.reference == t.reference and d.level == t.level and d.difficulty == t.difficulty
        assert d.task == "countdown_image" and d.text.count("<image>") == 1 and len(d.images) == 1
        assert not any(str(n) in d.text for n in [*t.reference["numbers"], t.reference["target"]])
        assert _pixels(d.images[0]).size == (96, 96)
    # the picture changes with the problem: distinct problems, distinct pixels
    assert len({d.images[0] for d in drawn}) == len({countdown._key(t.reference) for t in text})


def test_countdown_image_is_graded_by_countdowns_scorer_and_its_traces_read_then_solve():
    scorer = get_scorer("countdown_image")
    examples = render.sft_examples(3, 40, give_up_prob=0.0, slip_prob=0.2)
    prompts = list(itertools.islice(render.train_prompts(10_003), 40))  # sft_examples draws from seed + 10_000
    for (prompt, response, images), p in zip(examples, prompts):
        ref = p.reference
        assert prompt == p.text and images == p.images
        assert response.split("\n")[0] == (f"I read the numbers {' '.join(map(str, ref['numbers']))} "
                                           f"and the target {ref['target']}.")
    scores = scorer(prompts, [e.response for e in examples])
    assert [s.reason for s in scores] == ["ok"] * 40
    assert scorer(prompts[:1], ["answer 1+1"])[0].reason == "wrong_numbers"


# --------------------------------------------------------------------------- scenes


def _recompute(ref: dict) -> str:
    """The answer from the scene description, written independently of the generator."""
    q, ask, scene = ref["question"], ref["ask"], ref["scene"]
    shapes, bars = scene.get("shapes", []), scene.get("bars", [])
    if q == "count":
        return str(len([s for s in shapes if (ask["colour"] is None or s["colour"] == ask["colour"])
                        and (ask["kind"] is None or s["kind"] == ask["kind"])]))
    if q == "tallest":
        values = sorted((b["value"], b["label"]) for b in bars)
        assert values[-1][0] > values[-2][0]  # a unique tallest bar
        return values[-1][1]
    if q == "bar_value":
        return str(next(b["value"] for b in bars if b["label"] == ask["bar"]))
    names = [f"{s['colour']} {s['kind']}" for s in shapes]
    if q == "leftmost":
        best = min(shapes, key=lambda s: s["x"])
    else:
        pair = [s for s in shapes if f"{s['colour']} {s['kind']}" in (ask["a"], ask["b"])]
        assert len(pair) == 2 and ask["a"] != ask["b"]
        if q == "bigger":
            assert pair[0]["kind"] == pair[1]["kind"] and pair[0]["size"] != pair[1]["size"]
            best = max(pair, key=lambda s: s["size"])
        else:
            assert pair[0]["y"] != pair[1]["y"]
            best = min(pair, key=lambda s: s["y"])
    answer = f"{best['colour']} {best['kind']}"
    assert names.count(answer) == 1  # the answer names exactly one shape
    return answer


def test_every_scenes_answer_is_right_for_its_scene_and_levels_hold():
    held = scenes.heldout_prompts(60)
    assert len(held) == 180 and Counter(p.level for p in held) == {1: 60, 2: 60, 3: 60}
    assert {p.difficulty for p in held} == {0.0, 0.5, 1.0}
    assert {p.reference["question"] for p in held} == set(scenes.QUESTIONS)
    for p in held + list(itertools.islice(scenes.train_prompts(5), 300)):
        assert p.reference["answer"] == _recompute(p.reference), p
        spec = scenes._LEVEL_SPEC[p.level]
        scene, q = p.reference["scene"], p.reference["question"]
        if "shapes" in scene:
            assert q in ("count", "bigger", "leftmost", "higher")
            assert spec.shapes[0] <= len(scene["shapes"]) <= spec.shapes[1]
            for a, b in itertools.combinations(scene["shapes"], 2):  # no shape hides another
                sep = (a["size"] + b["size"]) // 2 + 3
                assert abs(a["x"] - b["x"]) >= sep or abs(a["y"] - b["y"]) >= sep
        else:
            assert len(scene["bars"]) == spec.bars
        if q == "bigger":
            small, big = sorted(s["size"] for s in scene["shapes"]
                                if f"{s['colour']} {s['kind']}" in (p.reference["ask"]["a"], p.reference["ask"]["b"]))
            assert big / small >= spec.ratio[0]
        if q == "tallest":
            top, second = sorted((b["value"] for b in scene["bars"]), reverse=True)[:2]
            assert top - second >= spec.margin
        if q == "count" and p.level == 3:  # both attributes asked, with one-attribute distractors
            assert p.reference["ask"]["colour"] and p.reference["ask"]["kind"]


def test_images_are_96px_rgb_deterministic_and_show_the_scene():
    a, b = scenes.heldout_prompts(10), scenes.heldout_prompts(10)
    scenes._SPLITS._heldout = None
    fresh = scenes.heldout_prompts(10)
    assert [p.images for p in a] == [p.images for p in b] == [p.images for p in fresh]
    first = [p.images[0] for p in itertools.islice(scenes.train_prompts(7), 20)]
    assert first == [p.images[0] for p in itertools.islice(scenes.train_prompts(7), 20)]
    assert first != [p.images[0] for p in itertools.islice(scenes.train_prompts(8), 20)]
    # the same bytes in another process, under another hash seed
    code = ("import hashlib; from longrl.tasks import render, scenes; print(hashlib.sha256(b''.join("
            "p.images[0] for p in scenes.heldout_prompts(10) + render.heldout_prompts(3))).hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    here = b"".join(p.images[0] for p in a + render.heldout_prompts(3))
    assert other == hashlib.sha256(here).hexdigest()
    # each shape is drawn in its colour at its centre
    for p in a:
        im = _pixels(p.images[0])
        assert im.size == (96, 96) and im.mode == "RGB"
        for s in p.reference["scene"].get("shapes", []):
            cy = s["y"] + s["size"] // 4 if s["kind"] == "triangle" else s["y"]  # a triangle's body is low
            assert im.getpixel((s["x"], cy)) == scenes.COLOURS[s["colour"]], (p.id, s)


def test_heldout_never_in_training_by_content_hash():
    held = {hashlib.sha256(p.text.encode() + p.images[0]).hexdigest() for p in scenes.heldout_prompts()}
    assert len(held) == 450
    train = itertools.islice(scenes.train_prompts(0), 2000)
    assert not any(hashlib.sha256(p.text.encode() + p.images[0]).hexdigest() in held for p in train)
    one = scenes.heldout_prompts()[0]
    rng = random.Random("scenes-heldout-v1")  # replaying the held-out seed: the stream skips it
    assert scenes.content_key(scenes.make_prompt(rng, 1, "x")) == scenes.content_key(one)


@pytest.mark.parametrize("response,reason", [
    ("look 3 shapes\nanswer red circle", "ok"),
    ("answer  The RED circle.", "ok"),
    ("answer blue circle\nwait\nanswer red circle", "ok"),
    ("answer red circle\nanswer blue circle", "wrong"),
    ("answer red", "wrong"),
    ("answer red circle " + "x" * 40, "wrong"),
    ("the red circle", "no_answer"),
    ("Answer: red circle", "no_answer"),
    ("", "no_answer"),
])
def test_scenes_verifier_on_right_wrong_and_garbled_answers(response, reason):
    ref = {"answer": "red circle"}
    assert scenes.verify(response, ref).reason == reason
    assert scenes.verify(response, ref).correct == (reason == "ok")


def test_scenes_numeric_and_letter_answers_compare_exactly():
    assert scenes.verify("answer 3", {"answer": "3"}).correct
    assert not scenes.verify("answer 03", {"answer": "3"}).correct
    assert not scenes.verify("answer 3.5", {"answer": "3"}).correct
    assert scenes.verify("answer b", {"answer": "B"}).correct


def test_scenes_traces_verify_and_impatient_ones_answer_from_what_they_saw():
    scorer = get_scorer("scenes")
    prompts = list(itertools.islice(scenes.train_prompts(2), 200))
    full = [scenes.write_trace(p, random.Random(i), give_up_prob=0.0, slip_prob=0.3) for i, p in enumerate(prompts)]
    assert [s.reason for s in scorer(prompts, full)] == ["ok"] * 200
    assert any(" wait " in t for t in full)
    fixed = scenes.write_trace(prompts[0], random.Random(0), give_up_prob=0.0, slip_prob=0.0, order="fixed")
    assert fixed.split("\n")[0].startswith("look ") and fixed.split("\n")[-1] == "answer " + prompts[0].reference["answer"]
    short = [scenes.write_trace(p, random.Random(i), patience=1) for i, p in enumerate(prompts)]
    assert all("stop looking" in t for t in short)  # every scene has 2+ shapes or 3+ bars
    wrong = sum(not s.correct for s in scorer(prompts, short))
    assert 0.2 * len(prompts) < wrong < len(prompts)  # an impatient look is often, not always, wrong
    with pytest.raises(ValueError, match="patience"):
        scenes.write_trace(prompts[0], random.Random(0), patience=0)
    examples = scenes.sft_examples(0, 30, give_up_prob=0.0)
    assert len(examples) == 30 and all(len(e.images) == 1 and e.prompt.count("<image>") == 1 for e in examples)


def test_blank_image_control_keeps_size_and_text_and_removes_the_content():
    prompts = scenes.heldout_prompts(5)[:5] + render.heldout_prompts(2)[:2] + countdown.heldout_prompts(1)[:1]
    blanks = render.blank_images(prompts)
    assert blanks[-1] is prompts[-1]  # text-only: unchanged
    for p, b in zip(prompts[:-1], blanks[:-1]):
        assert (b.id, b.text, b.reference) == (p.id, p.text, p.reference) and b.images != p.images
        im = _pixels(b.images[0])
        assert im.size == _pixels(p.images[0]).size and im.getcolors() == [(96 * 96, render.BACKGROUND)]
        assert b.tags["blank_images"] and "blank_images" not in p.tags


# --------------------------------------------------------------------------- registry and lookups


def test_registry_names_levels_and_lookups():
    assert task_names() == ["countdown", "countdown_image", "scenes"]
    assert [get_task(n).modality for n in task_names()] == ["text", "image", "image"]
    assert all(get_task(n).levels == (1, 2, 3) for n in task_names())
    assert len({get_task(n).version for n in task_names()}) == 3
    with pytest.raises(ValueError, match=r"unknown built-in task 'nope'; choose from \['countdown'"):
        get_task("nope")
    assert is_builtin("scenes") and not is_builtin("prompts.jsonl")
    for name in task_names():
        task = get_task(name)
        p = next(task.train_prompts(0, (2,)))
        assert p.task == name and p.level == 2
        assert get_scorer(name)([p], ["answer ?"])[0].reason in ("wrong", "bad_expression")
        assert task.corpus(3) and all(isinstance(t, str) for t in task.corpus(3))


def test_eval_bench_names_list_the_heldout_sets():
    assert {"countdown", "countdown_image", "scenes"} <= set(benchmark_names())
    assert [p.id for p in load_benchmark("countdown_image")] == \
        [p.id.replace("countdown", "countdown_image", 1) for p in load_benchmark("countdown")]
    assert [p.id for p in load_benchmark("scenes")] == [p.id for p in scenes.heldout_prompts()]
    rows = {r["name"]: r for r in benchmark_table()}
    assert rows["scenes"]["prompts"] == 450 and rows["scenes"]["task"] == "scenes"


def test_data_task_accepts_the_visual_tasks_and_checks_their_levels():
    from longrl.data.sources import read_task_prompts
    from longrl.train.loop import read_prompts

    cfg = RunConfig()
    cfg.data.task, cfg.data.levels, cfg.data.heldout_per_level, cfg.sampling.pool_size = "scenes", [3], 4, 10
    pool, held, _ = read_prompts(cfg)
    assert len(pool) == 10 and {p.level for p in pool} == {3} and len(held) == 12
    assert all(p.task == "scenes" and p.images for p in pool + held)
    cfg.data.task, cfg.data.levels = "countdown_image", [1, 4]
    with pytest.raises(UserError, match=r"data.levels: \[4\] are not countdown_image levels \[1, 2, 3\]"):
        read_prompts(cfg)
    got, _ = read_task_prompts("countdown_image", limit=5)
    assert [p.task for p in got] == ["countdown_image"] * 5 and all(p.images for p in got)
