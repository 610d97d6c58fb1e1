"""Real-checkpoint conventions on a tiny Qwen2 instruct model (``chatml_model_dir``): the chat
template, every end token of ``generation_config.json``, the tokenizer's own BOS, and every verb
end to end with ``model.chat_template=true``."""

import json

import pytest
import torch

from longrl.cli import main
from longrl.models.loading import encode_prompt, load_model, load_tokenizer
from longrl.rewards import register_scorer
from longrl.types import GenRequest, SamplingParams, Score

COUNTDOWN_PROMPT = "Use 3 4 5 to make 27.\n"


@register_scorer("chatml_any")
class _AnyScorer:
    """Every response is correct, so the sampling verbs always have something to select."""

    def __init__(self, **_):
        pass

    def __call__(self, prompts, responses):
        return [Score(1.0, "ok") for _ in responses]


def _ends(tok):
    return tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])


@pytest.fixture
def engine_stops(monkeypatch):
    """The end-token ids of every hf engine built while the test runs."""
    from longrl.rollout.hf import HFEngine

    seen, init = [], HFEngine.__init__

    def record(self, model, eos_ids, *args, **kwargs):
        eos_ids = list(eos_ids)
        seen.append(sorted(eos_ids))
        init(self, model, eos_ids, *args, **kwargs)

    monkeypatch.setattr(HFEngine, "__init__", record)
    return seen


# ----------------------------------------------------------------------------- encoding


def test_chat_prompt_is_token_ids_that_decode_to_the_template(chatml_model_dir):
    tok = load_tokenizer(chatml_model_dir)
    ids = encode_prompt(tok, COUNTDOWN_PROMPT, chat_template=True)
    assert ids and all(isinstance(i, int) for i in ids)
    text = tok.apply_chat_template([{"role": "user", "content": COUNTDOWN_PROMPT}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert tok.decode(ids) == text


def test_sft_and_dpo_sequences_render_the_conversation_and_end_with_end_of_turn(chatml_model_dir):
    from longrl.train.dpo import encode_pairs
    from longrl.train.sft import encode_examples

    tok = load_tokenizer(chatml_model_dir)
    im_end, _ = _ends(tok)
    prompt, response = COUNTDOWN_PROMPT, "3 * 4 = 12 ... answer 27"
    (seq,) = encode_examples(tok, [(prompt, response)], 512, chat_template=True)
    conversation = tok.apply_chat_template([{"role": "user", "content": prompt},
                                            {"role": "assistant", "content": response}], tokenize=False)
    # the whole conversation up to the end-of-turn token, which generation stops at
    assert tok.decode(seq.ids) == conversation.removesuffix("\n")
    assert seq.ids[: seq.loss_start] == encode_prompt(tok, prompt, chat_template=True)
    assert seq.ids[-1] == im_end and tok.decode(seq.ids[seq.loss_start :]) == response + "<|im_end|>"
    pairs = encode_pairs(tok, [(prompt, response, response + " and more")], 512, chat_template=True)
    assert pairs.seqs[0].ids == seq.ids and pairs.seqs[1].ids[-1] == im_end  # encoded as SFT encodes


def _llama_style_tokenizer():
    """A byte-level BPE that, like Llama's, adds ``<s>`` in front of every encoded text by default."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([COUNTDOWN_PROMPT, "answer 27"] * 10, trainer=trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="</s>",
                                   add_bos_token=True)


def test_plain_prompts_get_the_tokenizers_bos_once():
    from longrl.train.dpo import encode_pairs
    from longrl.train.sft import encode_examples

    tok = _llama_style_tokenizer()
    bos = tok.bos_token_id
    assert tok("x")["input_ids"][0] == bos  # the tokenizer's own default
    ids = encode_prompt(tok, COUNTDOWN_PROMPT)
    assert ids[0] == bos and ids.count(bos) == 1 and ids[-1] != tok.eos_token_id
    (seq,) = encode_examples(tok, [(COUNTDOWN_PROMPT, "answer 27")], 512)
    assert seq.ids.count(bos) == 1 and seq.ids[: seq.loss_start] == ids  # no BOS inside the response
    assert seq.ids[-1] == tok.eos_token_id
    pairs = encode_pairs(tok, [(COUNTDOWN_PROMPT, "answer 27", "answer 28 then")], 512)
    assert pairs.seqs[0].ids == seq.ids and pairs.seqs[1].ids.count(bos) == 1


def test_quickstart_tokenizer_adds_no_special_tokens(tiny_model_dir):
    """The built-in tiny tokenizer has no BOS: the quickstart's prompts are unchanged."""
    from longrl.tasks import countdown

    tok = load_tokenizer(tiny_model_dir)
    for p in countdown.heldout_prompts(3):
        assert encode_prompt(tok, p.text) == tok(p.text, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------- end tokens


def test_stop_token_ids_union_tokenizer_config_and_generation_config(chatml_model_dir, tiny_model_dir):
    from longrl.models.loading import stop_token_ids

    tok = load_tokenizer(chatml_model_dir)
    both = sorted(_ends(tok))
    assert stop_token_ids(tok, chatml_model_dir) == both
    assert stop_token_ids(tok, str(chatml_model_dir)) == both
    model, _ = load_model(chatml_model_dir)
    assert stop_token_ids(tok, model) == both
    assert stop_token_ids(tok, {"eos_token_id": [7, tok.eos_token_id]}) == sorted({7, tok.eos_token_id})
    tiny = load_tokenizer(tiny_model_dir)
    assert stop_token_ids(tiny, tiny_model_dir) == [tiny.eos_token_id]


def test_a_base_model_with_a_chat_template_stops_at_its_end_of_turn(chatml_model_dir):
    """A base checkpoint that ships a ChatML template names only <|endoftext|> in its configs (Qwen2.5
    base); with model.chat_template=true, SFT teaches responses to end with <|im_end|>, so generation
    must stop there too."""
    from longrl.models.loading import stop_token_ids

    tok = load_tokenizer(chatml_model_dir)
    im_end, endoftext = _ends(tok)
    tok.eos_token = "<|endoftext|>"
    base = {"eos_token_id": endoftext}
    assert stop_token_ids(tok, base) == [endoftext]
    assert stop_token_ids(tok, base, chat_template=True) == sorted({im_end, endoftext})


@pytest.mark.parametrize("end", ["<|im_end|>", "<|endoftext|>"])
def test_engine_from_make_engine_stops_at_every_end_token(chatml_model_dir, end):
    from longrl.config import load_config
    from longrl.train.loop import make_engine

    cfg = load_config(None, [f"model.path={chatml_model_dir}", "model.chat_template=true"])
    model, tok = load_model(chatml_model_dir)
    end_id = tok.convert_tokens_to_ids(end)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():  # greedy decoding now always picks ``end``
        head.weight.zero_()
        head.bias.zero_()
        head.bias[end_id] = 1.0
    model.lm_head = head
    engine = make_engine(cfg, model, tok, chatml_model_dir)
    (r,) = engine.generate([GenRequest(encode_prompt(tok, COUNTDOWN_PROMPT), 6)], SamplingParams(0.0))
    assert r.token_ids == [end_id] and r.stop_reason == "eos"


# ----------------------------------------------------------------------------- every verb


def _prompt_file(path, n=2, task="chatml_any"):
    rows = [{"prompt": f"Use {i + 1} 2 3 to make {i + 6}.\n", "answer": str(i), "task": task} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sets(*extra):
    return [x for s in extra for x in ("--set", s)]


def test_train_from_an_instruct_model(chatml_model_dir, tmp_path, engine_stops):
    tok = load_tokenizer(chatml_model_dir)
    sets = _sets(f"model.path={chatml_model_dir}", "model.chat_template=true", "sft.enabled=false",
                 "rl.iterations=1", "rollout.batch_prompts=2", "rollout.k=2", "rollout.max_length=16",
                 "data.heldout_per_level=1", "sampling.pool_size=8", "eval.n_samples=1", "checkpoint.every=1")
    assert main(["train", *sets, "--out", str(tmp_path / "runs"), "--name", "chat", "--quiet"]) == 0
    run = tmp_path / "runs" / "chat"
    (line,) = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert 0 < line["response/len_mean"] <= 16
    assert engine_stops and all(s == sorted(_ends(tok)) for s in engine_stops)
    gen = json.loads((run / "checkpoints" / "iter_1" / "generation_config.json").read_text())
    assert sorted(gen["eos_token_id"]) == sorted(_ends(tok))  # the checkpoint keeps both end tokens


def test_eval_an_instruct_model(chatml_model_dir, tmp_path, engine_stops):
    tok = load_tokenizer(chatml_model_dir)
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(chatml_model_dir), "--data", str(_prompt_file(tmp_path / "p.jsonl")),
                 "--n", "2", "--max-tokens", "8", "--chat-template", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 + 2 and all(0 < r["tokens"] <= 8 for r in rows)
    assert engine_stops == [sorted(_ends(tok))]
    assert main(["eval", "--model", str(chatml_model_dir), "--bench", "countdown", "--limit", "1", "--n", "1",
                 "--max-tokens", "4", "--no-greedy", "--chat-template", "--out", str(tmp_path / "ev2")]) == 0


def test_sft_an_instruct_model(chatml_model_dir, tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Use {i} 2 to make {i + 2}.\n", "response": f"{i} + 2"}) + "\n"
                            for i in range(3)))
    out = tmp_path / "sft"
    assert main(["sft", "--data", str(data), "--model", str(chatml_model_dir), "--out", str(out),
                 *_sets("model.chat_template=true", "sft.epochs=1"), "--quiet"]) == 0
    from longrl.models.loading import stop_token_ids

    tok = load_tokenizer(out)
    assert (out / "model.safetensors").is_file() and stop_token_ids(tok, out) == sorted(_ends(tok))


def test_long2short_on_an_instruct_model(chatml_model_dir, tmp_path, engine_stops):
    tok = load_tokenizer(chatml_model_dir)
    out = tmp_path / "shortest"
    assert main(["long2short", "shortest", "--model", str(chatml_model_dir), "--data",
                 str(_prompt_file(tmp_path / "p.jsonl")), "--n", "2", "--max-tokens", "8", "--chat-template",
                 "--train", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(x) for x in (out / "shortest.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and (out / "config.json").is_file()
    cmp_out = tmp_path / "cmp"
    assert main(["long2short", "compare", str(chatml_model_dir), str(out), "--bench", "countdown", "--limit", "1",
                 "--n", "1", "--max-tokens", "4", "--no-greedy", "--chat-template", "--out", str(cmp_out),
                 "--quiet"]) == 0
    assert len(engine_stops) == 3 and all(s == sorted(_ends(tok)) for s in engine_stops)


# ----------------------------------------------------------------------------- progress bars


def test_merge_prints_no_transformers_progress_bars(chatml_model_dir, tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh process
    capfd.readouterr()
    assert main(["long2short", "merge", "--long", str(chatml_model_dir), "--short", str(chatml_model_dir),
                 "--out", str(tmp_path / "merged")]) == 0
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err


def test_ray_rollout_worker_prints_no_transformers_progress_bars(chatml_model_dir, capfd):
    """A Ray worker is a fresh process whose stderr reaches the driver: it quiets transformers itself."""
    from transformers.utils import logging as hf_logging

    from longrl.config import load_config
    from longrl.distributed.ray_cluster import RolloutWorker

    hf_logging.enable_progress_bar()  # as in a fresh process
    capfd.readouterr()
    cfg = load_config(None, [f"model.path={chatml_model_dir}"])
    RolloutWorker(cfg, str(chatml_model_dir), torch.get_num_threads())
    assert "Loading weights" not in capfd.readouterr().err
