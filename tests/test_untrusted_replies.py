"""Reading what untrusted code answers is bounded in time and size (no sandbox needed here).

The sandboxed program can hand the trusted parent any JSON it likes in a function-call reply
(it can swap the stub's encoder), so decoding must not let it stall the grader: a set of ints
whose hashes all collide cost n**2 / 2 comparisons to rebuild (100,000 of them: 67-143 s).
The end-to-end attack is in test_sandbox_security.py.
"""

from __future__ import annotations

import json
import time

import pytest

from longrl.rewards.sandbox._codec import decode_value, dumps_value, encode_value, loads_value
from longrl.rewards.sandbox._procs import _Proc, _Protocol
from longrl.rewards.sandbox.rpc import CallFailed
from longrl.rewards.sandbox.server import RemoteSession
from longrl.rewards.sandbox.types import Limits

M = (1 << 61) - 1  # hash(k * M) == 0 for every int k


def colliding_ints(n: int) -> list:
    return [{"int": format(k * M, "x")} for k in range(1, n + 1)]


@pytest.mark.parametrize("tag", ["set", "frozenset", "dict", "nested"])
def test_colliding_hash_containers_are_refused_fast(tag):
    items = colliding_ints(100_000)
    y = {"dict": [[k, 0] for k in items]} if tag == "dict" else {tag: items}
    if tag == "nested":  # inside a list inside a tuple: refused wherever it sits
        y = {"tuple": [[{"frozenset": items}]]}
    t = time.monotonic()
    with pytest.raises(ValueError, match="100000 items whose hashes collide"):
        decode_value(json.loads(json.dumps(y)))
    assert time.monotonic() - t < 2.0


def test_legitimate_hash_containers_still_round_trip():
    values = [set(range(200_000)), {str(i): [i, (i, -i)] for i in range(20_000)}, frozenset({-1, -2, 0.5, 2**60}),
              {(1, 2): {3: frozenset({4})}}, {k * M for k in range(1, 9)}]  # 8 sharing a hash: allowed
    for v in values:
        out = loads_value(dumps_value(v), deadline=time.monotonic() + 30)
        assert out == v and type(out) is type(v)


def test_decoding_stops_at_its_deadline():
    y = encode_value([[i, str(i)] for i in range(50_000)])
    with pytest.raises(TimeoutError):
        decode_value(y, deadline=time.monotonic() - 1)
    assert len(decode_value(y, deadline=None)) == 50_000  # no deadline: the stub reading its arguments


def test_reply_frames_are_capped_before_they_are_read():
    proc = _Proc.__new__(_Proc)
    proc.buf, proc.overflow = {"rep": bytearray((5000).to_bytes(4, "big") + (0).to_bytes(4, "big"))}, False
    with pytest.raises(_Protocol, match="too large"):  # announced size over the cap: only 8 bytes read
        proc._take_frame(frame_cap=4096)
    assert proc.overflow
    deep = b"[" * 200_000
    proc.buf["rep"] = bytearray(len(deep).to_bytes(4, "big") + (0).to_bytes(4, "big") + deep)
    with pytest.raises(_Protocol, match="nested too deeply"):  # not a RecursionError out of the grader
        proc._take_frame()


class _FakeClient:
    """Stands for a sandbox server that relays a hostile value (or is itself compromised)."""

    def __init__(self, value):
        self.value, self.posts = value, []

    def _post(self, path: str, body: dict) -> dict:
        self.posts.append(path)
        return {"value": self.value} if path == "/session/call" else {"ok": True}


def test_remote_session_bounds_decoding_too(monkeypatch):
    client = _FakeClient({"set": colliding_ints(100_000)})
    t = time.monotonic()
    with pytest.raises(CallFailed, match="collide") as e:
        RemoteSession(client, "sid", Limits(time_s=1.0)).call("f", (1,))
    assert (e.value.verdict, e.value.fatal) == ("runtime_error", False) and time.monotonic() - t < 2.0
    monkeypatch.setattr("longrl.rewards.sandbox.server._DECODE_GRACE_S", 0.0)
    slow = RemoteSession(_FakeClient(encode_value(list(range(100_000)))), "sid", Limits(time_s=1.0))
    with pytest.raises(CallFailed) as e:  # a deadline already past (and no grace): not read at length
        slow.call("f", (1,), deadline=time.monotonic() - 5)
    assert (e.value.verdict, e.value.fatal, slow.closed) == ("timeout", True, True)
    assert slow.client.posts[-1] == "/session/close"
