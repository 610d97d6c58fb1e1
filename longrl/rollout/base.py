"""The rollout engine protocol (DESIGN §7).

Every engine (``hf`` here; ``vllm`` on GPUs) takes :class:`~longrl.types.GenRequest` s — token ids
of the full context, so a partial rollout continues from a saved prefix simply by sending
prompt + response-so-far — and returns :class:`~longrl.types.GenResult` s with per-token
log-probs of the *sampling* distribution (logits / temperature, top-p renormalised).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch

from longrl.types import GenRequest, GenResult, SamplingParams


class RolloutEngine(Protocol):
    def generate(self, requests: list[GenRequest], params: SamplingParams) -> list[GenResult]:
        """Generate one continuation per request, in request order."""
        ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load new policy weights (after each training phase)."""
        ...

    def sleep(self) -> None:
        """Release memory while the trainer runs (colocated mode); a no-op where nothing to free."""
        ...

    def wake(self) -> None:
        """Re-acquire what ``sleep`` released."""
        ...
