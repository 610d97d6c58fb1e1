"""The sandbox over HTTP, for reward workers on other machines (DESIGN §6 "served over HTTP").

``longrl sandbox serve --port P`` runs :func:`make_server`; :class:`SandboxClient` talks to it.
The server only ever runs code inside its sandboxes: test harnesses, test code and expected
outputs stay with the client (the reward worker), which decides every verdict itself, exactly as
with a local sandbox (:func:`longrl.rewards.sandbox.harness.evaluate` takes either). Endpoints,
JSON in and out:

* ``GET /health`` -> ``{"ok": true, "languages": [...], "isolation": "bwrap" | "none"}``
* ``POST /run`` ``{"code", "lang", "stdin", "time_limit"?, "memory_mb"?, "output_bytes"?}`` -> one
  RunResult
* ``POST /run_batch`` ``{"code", "lang", "inputs": [...], ...}`` -> ``{"compile_error": RunResult
  | null, "results": [RunResult | null, ...]}``: compiled once, run once per input (null: not run
  after a timeout)
* ``POST /session`` ``{"code", ...}`` -> ``{"id"}``: a function-call session (assert-style tests);
  ``POST /session/call`` ``{"id", "fn", "args", "timeout"}`` -> ``{"value"}`` or ``{"failed":
  verdict, "message", "fatal"}``; ``POST /session/close`` ``{"id"}``. Values travel in the
  tagged-JSON encoding of ``_codec``; a session idle for 120 s is closed by the server. Both
  sides decode values under the call's deadline (see ``rpc``): the server the sandbox's reply, the
  client the server's answer, so a reply built to be slow to decode stalls neither.

It binds 127.0.0.1 by default; binding any other address requires a token, sent by clients as
``Authorization: Bearer <token>`` (compared in constant time). Standard-library ``http.server``
with one thread per request; the sandbox's cell pool bounds the real concurrency.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from longrl.errors import UserError
from longrl.rewards.sandbox._codec import decode_value, encode_value
from longrl.rewards.sandbox.executor import Limits, RunResult, Sandbox, check_language
from longrl.rewards.sandbox.rpc import _DECODE_GRACE_S, CallFailed

MAX_BODY = 64 << 20  # bytes per request: code plus the inputs of one response's cases
SESSION_IDLE_S = 120.0  # a session nobody called for this long is closed (its client is gone)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _limits(sb: Sandbox, req: dict[str, Any]) -> Limits:
    d = asdict(sb.cfg.limits)
    if req.get("time_limit") is not None:
        t = float(req["time_limit"])
        if not 0 < t <= 600:
            raise ValueError("time_limit must be in (0, 600]")
        d["time_s"] = t
    if req.get("memory_mb") is not None:
        m = int(req["memory_mb"])
        if not 16 <= m <= 65536:
            raise ValueError("memory_mb must be in [16, 65536]")
        d["memory_mb"] = m
    if req.get("output_bytes") is not None:
        o = int(req["output_bytes"])
        if not 1024 <= o <= MAX_BODY:
            raise ValueError(f"output_bytes must be in [1024, {MAX_BODY}]")
        d["output_bytes"] = o
    return Limits(**d)


class _Sessions:
    """Open function-call sessions by id; a janitor closes idle ones so cells are not leaked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[Any, float]] = {}
        threading.Thread(target=self._janitor, daemon=True, name="sandbox-sessions").start()

    def add(self, session: Any) -> str:
        sid = secrets.token_hex(16)
        with self._lock:
            self._open[sid] = (session, time.monotonic())
        return sid

    def get(self, sid: str) -> Any:
        with self._lock:
            if sid not in self._open:
                raise ValueError("no such session (closed, or idle too long)")
            session, _ = self._open[sid]
            self._open[sid] = (session, time.monotonic())
        return session

    def close(self, sid: str) -> None:
        with self._lock:
            session, _ = self._open.pop(sid, (None, 0.0))
        if session is not None:
            session.close()

    def _janitor(self) -> None:
        while True:
            time.sleep(5)
            now = time.monotonic()
            with self._lock:
                idle = [sid for sid, (_, t) in self._open.items() if now - t > SESSION_IDLE_S]
            for sid in idle:
                self.close(sid)


def _result(res: RunResult | None) -> dict[str, Any] | None:
    return None if res is None else res.to_dict()


def make_handler(sb: Sandbox, token: str | None) -> type[BaseHTTPRequestHandler]:
    sessions = _Sessions()

    def handle(path: str, req: dict[str, Any]) -> dict[str, Any]:
        if path == "/session/call":
            session = sessions.get(str(req.get("id")))
            timeout = min(float(req.get("timeout", sb.cfg.limits.time_s)), 600.0)
            deadline = time.monotonic() + timeout
            try:
                args = tuple(decode_value(req.get("args", []), deadline))
            except TimeoutError:
                raise ValueError("the call's arguments took past its deadline to read") from None
            try:
                value = session.call(str(req["fn"]), args, deadline)
                return {"value": encode_value(value)}
            except CallFailed as e:
                if e.fatal:
                    sessions.close(str(req.get("id")))
                return {"failed": e.verdict, "message": str(e), "fatal": e.fatal}
        if path == "/session/close":
            sessions.close(str(req.get("id")))
            return {"ok": True}
        if not isinstance(req.get("code"), str):
            raise ValueError("request must carry a 'code' string")
        lang = str(req.get("lang", "python"))
        check_language(lang, sb.languages)
        lim = _limits(sb, req)
        if path == "/run":
            stdin = req.get("stdin", "")
            if not isinstance(stdin, str):
                raise ValueError("'stdin' must be a string")
            return sb.run(req["code"], lang, stdin.encode(), lim).to_dict()
        if path == "/run_batch":
            inputs = req.get("inputs")
            if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
                raise ValueError("'inputs' must be a list of strings")
            failed, results = sb.run_batch(req["code"], lang, inputs, lim)
            return {"compile_error": _result(failed), "results": [_result(r) for r in results]}
        if path == "/session":
            if lang != "python":
                raise ValueError("function-call sessions run Python only")
            try:
                return {"id": sessions.add(sb.session(req["code"], lim))}
            except CallFailed as e:  # the program did not load (exited, crashed, timed out)
                return {"failed": e.verdict, "message": str(e), "fatal": True}
        raise LookupError(f"no such endpoint {path}")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # one line per request on stderr
            sys.stderr.write(f"sandbox {self.address_string()} {fmt % args}\n")

        def _reply(self, status: int, obj: dict[str, Any]) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorised(self) -> bool:
            if token is None:
                return True
            got = self.headers.get("Authorization", "")
            if hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                return True
            self._reply(401, {"error": "missing or wrong token"})
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not self._authorised():
                return
            if self.path != "/health":
                return self._reply(404, {"error": f"no such endpoint {self.path}"})
            self._reply(200, {"ok": True, "languages": sb.languages, "isolation": sb.isolation})

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorised():
                return
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                self.close_connection = True
                return self._reply(413, {"error": f"request larger than {MAX_BODY} bytes"})
            try:
                req = json.loads(self.rfile.read(n))
                if not isinstance(req, dict):
                    raise ValueError("request must be a JSON object")
                return self._reply(200, handle(self.path, req))
            except LookupError as e:
                return self._reply(404, {"error": str(e).strip("'\"")})
            except (ValueError, TypeError, UserError) as e:
                return self._reply(400, {"error": str(e)})
            except Exception as e:  # noqa: BLE001 - sandbox boundary: one bad request (or a
                # sandbox hiccup) answers 500 to that client and the server keeps serving
                return self._reply(500, {"error": f"{type(e).__name__}: {e}"})

    return Handler


def make_server(sb: Sandbox, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0 = any free port; see ``server.server_address``)."""
    if not _is_loopback(host) and not token:
        raise UserError(f"binding the sandbox server to {host} needs a token (--token or LONGRL_SANDBOX_TOKEN)")
    server = ThreadingHTTPServer((host, port), make_handler(sb, token or None))
    server.daemon_threads = True
    return server


class SandboxClient:
    """Talks to ``longrl sandbox serve``; the same ``run`` / ``run_batch`` / ``session`` as the
    local :class:`Sandbox`, so the harness runs here and only the untrusted code runs there.

    The constructor checks ``/health``: a server that cannot be reached, or that rejects the
    token, is a :class:`UserError` at start-up rather than a failure in the middle of a run.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0,
                 limits: Limits | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.default_limits = limits or Limits()
        try:
            info = self._request("GET", "/health", None, timeout=10.0)
        except urllib.error.HTTPError as e:
            if e.code == 401:
                raise UserError(f"sandbox server at {self.url} rejected the token") from None
            raise UserError(f"sandbox server at {self.url} answered HTTP {e.code} to /health") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise UserError(f"cannot reach the sandbox server at {self.url}: {e}") from None
        self.languages = list(info.get("languages", ["python"]))
        self.isolation = info.get("isolation", "?")

    def _request(self, method: str, path: str, body: dict | None, timeout: float | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
            out = json.loads(resp.read())
        if not isinstance(out, dict):
            raise ValueError("server answered something other than a JSON object")
        return out

    def _post(self, path: str, body: dict) -> dict:
        try:
            return self._request("POST", path, body)
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read()).get("error", "")
            except Exception:  # noqa: BLE001 - the error body is only decoration
                msg = ""
            if e.code == 400:
                raise UserError(f"sandbox server: {msg}") from None
            raise RuntimeError(f"sandbox server at {self.url}: HTTP {e.code} {msg}") from None

    def _body(self, code: str, lang: str, limits: Limits | None) -> dict[str, Any]:
        check_language(lang)
        lim = limits or self.default_limits
        return {"code": code, "lang": lang, "time_limit": lim.time_s, "memory_mb": lim.memory_mb,
                "output_bytes": lim.output_bytes}

    def run(self, code: str, lang: str = "python", stdin: bytes | str = b"", limits: Limits | None = None) -> RunResult:
        body = self._body(code, lang, limits)
        body["stdin"] = stdin.decode("utf-8", "replace") if isinstance(stdin, bytes) else stdin
        return _run_result(self._post("/run", body))

    def run_batch(self, code: str, lang: str, inputs: list[str], limits: Limits | None = None
                  ) -> tuple[RunResult | None, list[RunResult | None]]:
        d = self._post("/run_batch", {**self._body(code, lang, limits), "inputs": list(inputs)})
        results = d.get("results")
        if not isinstance(results, list) or len(results) != len(inputs):
            raise ValueError("malformed run_batch answer")
        failed = d.get("compile_error")
        return (_run_result(failed) if failed else None), [_run_result(r) if r else None for r in results]

    def session(self, code: str, limits: Limits | None = None) -> RemoteSession:
        d = self._post("/session", self._body(code, "python", limits))
        if "failed" in d:
            raise CallFailed(str(d["failed"]), str(d.get("message", ""))[:500], fatal=True)
        return RemoteSession(self, str(d["id"]), limits or self.default_limits)

    def close(self) -> None:
        pass


class RemoteSession:
    """A function-call session on the server; the same ``call`` / ``close`` as RpcSession."""

    def __init__(self, client: SandboxClient, sid: str, limits: Limits):
        self.client, self.sid, self.limits = client, sid, limits
        self.closed = False

    def call(self, fn: str, args: tuple, deadline: float | None = None) -> Any:
        if self.closed:
            raise CallFailed("runtime_error", "the sandbox process has exited", fatal=True)
        deadline = deadline or time.monotonic() + self.limits.time_s
        d = self.client._post("/session/call", {"id": self.sid, "fn": fn, "args": encode_value(tuple(args)),
                                                "timeout": max(0.01, deadline - time.monotonic())})
        if "failed" in d:
            if d.get("fatal"):
                self.closed = True
            raise CallFailed(str(d["failed"]), str(d.get("message", ""))[:500], fatal=bool(d.get("fatal")))
        try:
            return decode_value(d.get("value"), max(deadline, time.monotonic() + _DECODE_GRACE_S))
        except TimeoutError:
            self.close()
            raise CallFailed("timeout", "no answer in time: reading the return value ran past the deadline",
                             fatal=True) from None
        except (ValueError, TypeError, RecursionError, MemoryError) as e:
            raise CallFailed("runtime_error", f"unreadable return value: {e}", fatal=False) from None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.client._post("/session/close", {"id": self.sid})


def _run_result(d: dict[str, Any]) -> RunResult:
    return RunResult(str(d["status"]), d.get("exit_code"), str(d.get("stdout", "")).encode(),
                     str(d.get("stderr", "")).encode(), float(d.get("wall_s", 0.0)))
