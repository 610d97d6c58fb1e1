"""``rl.activation_checkpointing``: same gradients, fewer saved activations, unchanged generation."""

import pytest
import torch

from longrl.config import dump_yaml, load_config
from longrl.errors import UserError
from longrl.models import load_model
from longrl.models.precision import enable_activation_checkpointing
from longrl.rollout.hf import HFEngine
from longrl.train.batch import Seq, micro_batches, token_logprobs
from longrl.train.update import DataParallel, UpdateStats, batch_gradient, policy_forward
from longrl.types import GenRequest, SamplingParams


def _seqs(vocab: int) -> list[Seq]:
    g = torch.Generator().manual_seed(0)
    seqs = []
    for i in range(5):
        n_prompt, n = 3 + i % 2, 12 + 3 * i
        ids = torch.randint(2, vocab, (n,), generator=g).tolist()
        ref = (-torch.rand(n - n_prompt, generator=g, dtype=torch.float64)).tolist()
        seqs.append(Seq(ids=ids, loss_start=n_prompt, advantage=float(i % 3 - 1), ref_logp=ref, index=i))
    return seqs


def _update_gradient(model, seqs, cfg, pad_id) -> torch.Tensor:
    """The trainer's own gradient of one mini-batch (eval mode, micro-batched), flattened."""
    model.zero_grad(set_to_none=True)
    batch_gradient(model, seqs, cfg, pad_id, DataParallel(), UpdateStats())
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _saved_tensors(model, batch, dtype: str) -> int:
    """How many tensors the update's forward keeps for the backward."""
    n = 0

    def pack(t):
        nonlocal n
        n += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), policy_forward(model, dtype):
        token_logprobs(model, batch).sum()
    return n


def test_update_gradient_is_unchanged_and_activations_are_not_kept(tiny_model_dir):
    cfg = load_config(None, ["model.dtype=float64", "rl.micro_batch_tokens=64"])
    plain, tok = load_model(tiny_model_dir, "float64")
    ckpt, _ = load_model(tiny_model_dir, "float64")
    enable_activation_checkpointing(ckpt)
    seqs = _seqs(len(tok))
    assert len(micro_batches(seqs, 64, tok.pad_token_id)) > 1
    want = _update_gradient(plain, seqs, cfg, tok.pad_token_id)
    got = _update_gradient(ckpt, seqs, cfg, tok.pad_token_id)
    assert want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)

    # the update runs in eval mode, where transformers alone would checkpoint nothing
    batch = micro_batches(seqs, 10_000, tok.pad_token_id)[0]
    kept_plain, kept_ckpt = _saved_tensors(plain, batch, "float64"), _saved_tensors(ckpt, batch, "float64")
    assert kept_ckpt < kept_plain / 3, (kept_ckpt, kept_plain)
    assert not ckpt.training and not any(m.training for m in ckpt.modules())  # policy_forward restored the mode


def test_field_round_trips_through_set():
    cfg = load_config(None, ["rl.activation_checkpointing=true"])
    assert cfg.rl.activation_checkpointing is True
    assert load_config(None, []).rl.activation_checkpointing is False
    assert "activation_checkpointing: true" in dump_yaml(cfg)
    with pytest.raises(UserError, match="rl.activation_checkpointing"):
        load_config(None, ["rl.activation_checkpointing=sometimes"])


def test_model_without_checkpointing_support_is_refused():
    from transformers import GPTNeoXJapaneseConfig, GPTNeoXJapaneseForCausalLM

    model = GPTNeoXJapaneseForCausalLM(GPTNeoXJapaneseConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_multiple_size=2))
    with pytest.raises(UserError, match=r"rl.activation_checkpointing=true: the model class "
                                        r"GPTNeoXJapaneseForCausalLM does not support"):
        enable_activation_checkpointing(model)


def test_layer_with_its_own_dropout_is_refused():
    """OPT's decoder layer applies dropout itself: re-armed for the eval-mode update, it would drop."""
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, ffn_dim=64,
                                     num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=64))
    with pytest.raises(UserError, match="OPTDecoderLayer applies dropout in its own forward"):
        enable_activation_checkpointing(model)


def test_engine_generates_the_same_tokens_with_the_kv_cache(tiny_model_dir):
    plain, tok = load_model(tiny_model_dir)
    ckpt, _ = load_model(tiny_model_dir)
    enable_activation_checkpointing(ckpt)
    seqs = _seqs(len(tok))
    cfg = load_config(None, [])
    _update_gradient(ckpt, seqs, cfg, tok.pad_token_id)  # the trainer's step leaves the engine's mode alone
    ckpt.train()  # even a module left in training mode samples in eval mode, with its cache

    new_tokens = []  # tokens fed to the first layer per forward: 1 per decode step with a KV cache
    ckpt.model.layers[0].register_forward_pre_hook(
        lambda m, args, kwargs: new_tokens.append((args[0] if args else kwargs["hidden_states"]).shape[1]),
        with_kwargs=True)
    prompts = [tok(t)["input_ids"] for t in ["Use 3 4 5 to make 27.\n", "Use 10 2 to make 8.\n"]]
    reqs = [GenRequest(p, 12, seed=i) for i, p in enumerate(prompts)]
    for params in (SamplingParams(temperature=1.0), SamplingParams(temperature=0)):
        want = HFEngine(plain, [tok.eos_token_id], tok.pad_token_id).generate(reqs, params)
        got = HFEngine(ckpt, [tok.eos_token_id], tok.pad_token_id).generate(reqs, params)
        assert [r.token_ids for r in got] == [r.token_ids for r in want]
        for g, w in zip(got, want):
            torch.testing.assert_close(torch.tensor(g.logprobs), torch.tensor(w.logprobs), rtol=0, atol=1e-6)
    assert new_tokens.count(1) >= 2 * 10 and max(new_tokens) > 1  # one prefill, then cached decode steps
    assert ckpt.training  # the engine restored the caller's mode
