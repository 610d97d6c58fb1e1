"""The update on what real checkpoints bring and the built-in model does not: low precision, large
vocabularies, dropout, top-p, a masked baseline, and GRPO's denominator."""

import pytest
import torch

from longrl.config import load_config
from longrl.models import load_model
from longrl.models.precision import master_dtype
from longrl.train.batch import Seq, micro_batches, token_logprobs
from longrl.train.update import policy_update


def _seqs(vocab: int, n: int = 6, seed: int = 0) -> list[Seq]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        n_prompt = 3 + i % 3
        length = n_prompt + 5 + (i * 5) % 9
        ids = torch.randint(2, vocab, (length,), generator=g).tolist()
        out.append(Seq(ids=ids, loss_start=n_prompt, advantage=float(i % 3 - 1), ref_logp=None, index=i))
    return out


def _with_ref(model, seqs, pad):
    """Fill ``ref_logp`` with the model's own log-probs (log pi_i), as the engine records them."""
    with torch.no_grad():
        for b in micro_batches(seqs, 10_000, pad):
            lp = token_logprobs(model, b)
            for row, idx in enumerate(b.index.tolist()):
                s = seqs[idx]
                s.ref_logp = lp[row, s.loss_start - 1 : len(s.ids) - 1].tolist()
    return seqs


def _reference_logprobs(model, b, temperature=1.0):
    """The obvious computation: full logits at every position, log-softmax in float64."""
    logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1].double() / temperature
    picked = logits.gather(-1, b.input_ids[:, 1:, None]).squeeze(-1)
    return (picked - torch.logsumexp(logits, -1)) * b.loss_mask


# ----------------------------------------------------------------------------- precision


def test_bf16_update_moves_the_weights_as_fp32_does(tiny_model_dir):
    """model.dtype=bfloat16: fp32 master weights, bf16 autocast; one AdamW step at lr 1e-6 moves the
    weights as in fp32 (bf16 parameters updated in place kept ~2% of such a step)."""
    moved = {}
    for dtype in ("float32", "bfloat16"):
        model, tok = load_model(tiny_model_dir, master_dtype(dtype))
        cfg = load_config(None, [f"model.dtype={dtype}", "rl.lr=1e-6", "rl.lr_final=null", "rl.mini_batches=1"])
        seqs = _with_ref(model, _seqs(len(tok)), tok.pad_token_id)
        before = [p.detach().clone() for p in model.parameters()]
        policy_update(model, seqs, cfg, 0, tok.pad_token_id)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        moved[dtype] = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    fp32, bf16 = moved["float32"], moved["bfloat16"]
    changed = lambda d: float((d != 0).float().mean())  # noqa: E731
    assert changed(fp32) > 0.9 and changed(bf16) > 0.9
    # Adam's first step is lr * sign(g): the bf16 forward changes a few small gradients' signs, not the step
    agree = float(((fp32 != 0) & (torch.sign(fp32) == torch.sign(bf16))).float().mean())
    assert agree > 0.8
    torch.testing.assert_close(bf16.abs().mean(), fp32.abs().mean(), rtol=0.05, atol=0)


def test_fp16_training_is_refused():
    from longrl.errors import UserError

    with pytest.raises(UserError, match="model.dtype=float16.*bfloat16"):
        load_config(None, ["model.dtype=float16"])


# ----------------------------------------------------------------------------- logits


def test_logprobs_only_at_loss_positions_in_chunks(tiny_model_dir):
    """The LM head sees only the loss tokens, in chunks; values and gradients equal the full-logits ones."""
    model, tok = load_model(tiny_model_dir, "float64")
    model.eval()
    seqs = _seqs(len(tok), n=5)
    (b,) = micro_batches(seqs, 10_000, tok.pad_token_id)
    token_logprobs(model, b)  # the one-time check that the head is separable runs on the first call
    rows_seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows_seen.append(i[0].shape[0]))
    try:
        fast = token_logprobs(model, b, temperature=0.7, chunk_elements=7 * len(tok))  # 7 tokens a chunk
    finally:
        hook.remove()
    loss_tokens = int(b.loss_mask.sum())
    assert loss_tokens > 14 and sum(rows_seen) == loss_tokens and max(rows_seen) == 7
    slow = _reference_logprobs(model, b, temperature=0.7)
    assert fast.dtype == torch.float64  # a float64 model's log-probs stay float64 (exact checks)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    g_fast = torch.autograd.grad((fast * b.advantages[:, None]).sum(), list(model.parameters()), allow_unused=True)
    g_slow = torch.autograd.grad((slow * b.advantages[:, None]).sum(), list(model.parameters()), allow_unused=True)
    for a, c in zip(g_fast, g_slow):
        if a is not None or c is not None:
            torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-7)


def test_head_rows_are_the_loss_tokens_not_the_whole_batch(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    seqs = _seqs(len(tok), n=4)
    (b,) = micro_batches(seqs, 10_000, tok.pad_token_id)
    token_logprobs(model, b)  # the one-time separability check happens here
    rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows.append(i[0].shape))
    try:
        token_logprobs(model, b)
    finally:
        hook.remove()
    assert [tuple(r) for r in rows] == [(int(b.loss_mask.sum()), model.config.hidden_size)]
    assert int(b.loss_mask.sum()) < b.input_ids.numel()


# ----------------------------------------------------------------------------- dropout


def _gpt2_with_dropout(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)
    return GPT2LMHeadModel(cfg)


def test_dropout_is_off_in_the_update(tmp_path):
    """A checkpoint with dropout (GPT-2, OPT): log pi at the first step equals log pi_i (Δ = 0), as the
    k1.5 update assumes, and the recomputed log pi_i is deterministic."""
    from longrl.train.update import DataParallel, UpdateStats, batch_gradient, policy_forward

    model = _gpt2_with_dropout(tmp_path)
    model.train()
    seqs = _seqs(64, n=4)
    with policy_forward(model, "float32"):  # log pi_i as the engine records it: no dropout
        seqs = _with_ref(model, seqs, pad=0)
    cfg = load_config(None, ["rl.mini_batches=1"])
    stats = UpdateStats()
    _, delta_sum, delta_n = batch_gradient(model, seqs, cfg, 0, DataParallel(), stats, note_mismatch=True)
    assert delta_n == 4 and delta_sum < 1e-4
    assert stats.mismatch_max < 1e-5
    assert model.training  # the caller's mode comes back


# ----------------------------------------------------------------------------- the loss denominator


@pytest.mark.parametrize("algorithm,scales", [("grpo", False), ("mirror_descent", True)])
def test_horizon_divides_only_losses_that_sum_over_tokens(tiny_model_dir, algorithm, scales):
    """GRPO's loss is already a per-sequence token mean: its gradient does not change with the horizon H;
    the k1.5 loss (summed log-probs) is divided by H."""
    from longrl.train.update import DataParallel, UpdateStats, batch_gradient

    grads = {}
    for horizon in (16, 64):
        model, tok = load_model(tiny_model_dir, "float64")
        seqs = _with_ref(model, _seqs(len(tok)), tok.pad_token_id)
        cfg = load_config(None, [f"rl.algorithm={algorithm}", f"rl.horizon={horizon}", "model.dtype=float64"])
        batch_gradient(model, seqs, cfg, tok.pad_token_id, DataParallel(), UpdateStats())
        grads[horizon] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    ratio = float(grads[16].norm() / grads[64].norm())
    assert ratio == pytest.approx(4.0 if scales else 1.0, rel=1e-6)


# ----------------------------------------------------------------------------- trainer wiring


def _trainer(tiny_model_dir, sets, prompts=None):
    from longrl.rewards import ScoreRouter
    from longrl.rollout.hf import HFEngine
    from longrl.tasks import countdown
    from longrl.train.rl import Trainer

    cfg = load_config(None, sets)
    model, tok = load_model(tiny_model_dir)
    prompts = prompts or countdown.heldout_prompts(4)
    engine = HFEngine(model, [tok.eos_token_id], tok.pad_token_id)
    return Trainer(cfg, model, tok, engine, prompts, ScoreRouter()), prompts


def _groups_of_cut_and_finished(trainer, p):
    """Two groups of 8: 4 finished wrong + 4 cut; 2 right + 3 finished wrong + 3 cut."""
    from longrl.types import Trajectory

    tok = trainer.tokenizer
    trajs = []
    for g, kinds in enumerate([["wrong"] * 4 + ["cut"] * 4, ["right"] * 2 + ["wrong"] * 3 + ["cut"] * 3]):
        for j, kind in enumerate(kinds):
            text = {"wrong": "no idea", "cut": "still searching " * (3 + j)}.get(kind) or _correct_response(p)
            ids = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if kind != "cut" else [])
            trajs.append(Trajectory(prompt_id=p.id, group_id=g, sample_index=j, prompt_ids=[1, 2, 3],
                                    response_ids=ids, logprobs=[0.0] * len(ids), versions=[0] * len(ids),
                                    stop_reason="max_length" if kind == "cut" else "eos"))
    return trajs


@pytest.mark.parametrize("weight", [0, 1])
def test_masked_responses_keep_the_papers_advantages(tiny_model_dir, weight):
    """The trainer's own reward assembly (score -> length reward -> baseline), rl.mask_truncated on: the
    responses cut at the cap leave the loss, and every response kept trains with the advantage k1.5's
    unmasked form gives it (the mean is over all k). rl.mask_truncated_baseline=true re-centres the kept
    ones instead: their advantages sum to zero in each group and the cut ones get 0."""
    sets = [f"length_penalty.weight={weight}", "length_penalty.warmup_iters=0", "rollout.k=8"]
    advantages = {}
    for name, extra in [("paper", ["rl.mask_truncated=false"]), ("masked", ["rl.mask_truncated=true"]),
                        ("centred", ["rl.mask_truncated=true", "rl.mask_truncated_baseline=true"])]:
        trainer, prompts = _trainer(tiny_model_dir, sets + extra)
        trajs = _groups_of_cut_and_finished(trainer, prompts[0])
        trainer.score(trajs)
        trainer.baseline(trajs)
        advantages[name] = [(t.group_id, t.advantage, trainer.in_loss(t)) for t in trajs]
        assert sum(t.score.correct for t in trajs) == 2
    paper, masked, centred = advantages["paper"], advantages["masked"], advantages["centred"]
    assert all(keep for _, _, keep in paper)
    assert [keep for _, _, keep in masked] == [keep for _, _, keep in centred] == [True] * 4 + [False] * 4 + [
        True] * 5 + [False] * 3
    for (_, a, _), (_, b, keep) in zip(paper, masked):
        if keep:
            assert b == pytest.approx(a, abs=1e-6)
    pushes = []
    for g in (0, 1):
        kept = [a for gid, a, keep in centred if gid == g and keep]
        assert sum(kept) == pytest.approx(0.0, abs=1e-6)
        assert all(a == 0 for gid, a, keep in centred if gid == g and not keep)
        pushes.append(sum(a for gid, a, keep in masked if gid == g and keep))
    # the kept responses of the mixed group are pushed up as a whole: the cut ones scored 0
    assert pushes[1] > 0 and (pushes[0] > 0) == (weight > 0)


def test_mask_truncated_baseline_needs_mask_truncated():
    from longrl.errors import UserError

    with pytest.raises(UserError, match="rl.mask_truncated_baseline=true needs rl.mask_truncated=true"):
        load_config(None, ["rl.mask_truncated=false", "rl.mask_truncated_baseline=true"])


def _correct_response(p) -> str:
    """A response the built-in countdown verifier accepts for prompt ``p`` (its short worked solution)."""
    import random

    from longrl.tasks import countdown

    ref = p.reference
    return countdown.write_trace(ref["numbers"], ref["target"], random.Random(0), short=True, slip_prob=0.0)


def test_trainer_recomputes_log_pi_i_only_where_the_loss_reads_it(tiny_model_dir):
    """grpo with top-p < 1 on the hf engine recomputes log pi_i (the engine's are of the top-p nucleus);
    rest never reads log pi_i and does not pay for a recomputation."""
    t, _ = _trainer(tiny_model_dir, ["rl.algorithm=grpo", "rollout.top_p=0.9"])
    assert t.recompute
    t, _ = _trainer(tiny_model_dir, ["rl.algorithm=rest", "partial.enabled=true"])
    assert not t.recompute
    t, _ = _trainer(tiny_model_dir, [])
    assert not t.recompute


def test_curation_pass_rate_seeds_the_sampler(tiny_model_dir):
    from longrl.tasks import countdown

    prompts = countdown.heldout_prompts(2)
    prompts[0].pass_rate = 0.75
    t, _ = _trainer(tiny_model_dir, ["sampling.strategy=prioritized"], prompts)
    assert t.sampler.success_rate(prompts[0].id) == 0.75
    assert t.sampler.success_rate(prompts[1].id) == 0.0


def test_curriculum_warm_up_defaults_to_a_third_of_the_run():
    cfg = load_config(None, ["sampling.strategy=curriculum", "rl.iterations=90"])
    assert cfg.sampling.warmup_iters(cfg.rl.iterations) == 30
    cfg = load_config(None, ["sampling.curriculum_warmup_iters=0"])
    assert cfg.sampling.warmup_iters(90) == 0


def test_prompt_file_pass_rate_is_read_and_checked(tmp_path):
    from longrl.data.prompts import load_prompt_file
    from longrl.errors import UserError

    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "1+1?", "answer": "2", "pass_rate": 0.3}\n{"prompt": "2+2?", "answer": "4"}\n')
    a, b = load_prompt_file(f)
    assert a.pass_rate == 0.3 and b.pass_rate is None
    f.write_text('{"prompt": "1+1?", "answer": "2", "pass_rate": 1.5}\n')
    with pytest.raises(UserError, match=r"p.jsonl:1: 'pass_rate' must be a number in \[0, 1\]"):
        load_prompt_file(f)
