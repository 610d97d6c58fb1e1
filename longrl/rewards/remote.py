"""A reward served over HTTP: a batch of (prompt, response, reference) in, one score each out.

The request is one ``POST`` of JSON to the endpoint's URL::

    {"prompts": [...], "responses": [...], "references": [...], "tasks": [...], "ids": [...],
     "extra": [{...}, ...],                      # each prompt's other columns (Prompt.extra)
     "query": [prompt + response, ...], "labels": [...]}   # the same, as OpenRLHF's remote_rm_url sends it

and the reply is ``{"scores": [...]}`` (or OpenRLHF's ``{"rewards": [...]}``), one item per
response: a number, or ``{"score": number, ...}`` whose other keys go into ``Score.parts``. An
empty batch must be answered with an empty list: that is the health check the scorer makes when it
is built, so an endpoint that is down stops the run at start-up, not in the middle of it.

A request that fails (refused, timed out, HTTP error, a reply that is not JSON) is retried
``retries`` times with a growing pause; if it still fails, every response of the batch scores 0
with reason ``remote_error``, and training goes on. Items that are not numbers score 0 with
``bad_return``. ``token`` is sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from longrl.errors import UserError
from longrl.rewards.custom import normalise
from longrl.types import Prompt, Score

_BACKOFF = 0.5  # s before the first retry; doubled for each next one


class RemoteScorer:
    """Scores over an HTTP reward endpoint (see the module docstring for the protocol)."""

    def __init__(self, url: str, *, timeout: float = 30.0, retries: int = 2, token: str | None = None,
                 where: str = "reward endpoint"):
        self.url, self.timeout, self.retries, self.token = url, float(timeout), int(retries), token
        try:
            self._post(self._body([], []), timeout=min(self.timeout, 10.0))
        except Exception as e:  # noqa: BLE001 - whatever the failure, the endpoint cannot be used
            raise UserError(f"{where}: the reward endpoint {url} did not answer an empty batch "
                            f"({_why(e)}); start it or fix the URL") from None

    @staticmethod
    def _body(prompts: Sequence[Prompt], responses: Sequence[str]) -> dict[str, Any]:
        return {"prompts": [p.text for p in prompts], "responses": list(responses),
                "references": [p.reference for p in prompts], "tasks": [p.task for p in prompts],
                "ids": [p.id for p in prompts], "extra": [p.extra for p in prompts],
                "query": [p.text + r for p, r in zip(prompts, responses)],
                "labels": [p.reference if isinstance(p.reference, str) else json.dumps(p.reference, default=str)
                           for p in prompts]}

    def _post(self, body: dict[str, Any], timeout: float) -> list:
        req = urllib.request.Request(self.url, data=json.dumps(body, default=str).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            obj = json.loads(reply.read().decode("utf-8", "replace"))
        items = obj.get("scores", obj.get("rewards")) if isinstance(obj, dict) else None
        if not isinstance(items, list):
            raise TypeError("the reply has no 'scores' (or 'rewards') list")
        if len(items) != len(body["responses"]):
            raise ValueError(f"the reply has {len(items)} scores for {len(body['responses'])} responses")
        return items

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Score]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return []
        body = self._body(prompts, responses)
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(_BACKOFF * 2 ** (attempt - 1))
            try:
                items = self._post(body, self.timeout)
            except Exception as e:  # noqa: BLE001 - a failed request is retried, then scored 0 with a reason
                why = _why(e)
                continue
            return [Score(*normalise(x)) for x in items]
        detail = f"{self.url}: {why} ({self.retries + 1} attempts)"
        return [Score(0.0, "remote_error", {"detail": detail}) for _ in prompts]

    def close(self) -> None:
        pass


def _why(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return f"{type(e).__name__}: {e}"
