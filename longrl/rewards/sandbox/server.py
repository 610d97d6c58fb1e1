"""The sandbox over HTTP, for reward workers on other machines (DESIGN §6 "served over HTTP").

``longrl sandbox serve --port P`` runs :func:`serve`; :class:`SandboxClient` talks to it. The
server is trusted: test cases and expected outputs travel to it and the harness runs there, so a
client gets verdicts, never a channel into a sandbox. Endpoints (JSON in, JSON out):

* ``GET /health`` -> ``{"ok": true, "languages": [...], "isolation": "bwrap" | "none"}``
* ``POST /run`` ``{"code", "lang", "stdin", "time_limit"?, "memory_mb"?}`` -> a RunResult
* ``POST /evaluate`` ``{"code", "lang", "reference"}`` -> an Evaluation

It binds 127.0.0.1 by default; binding any other address requires a token, sent by clients as
``Authorization: Bearer <token>`` (compared in constant time). Standard-library ``http.server``
with one thread per request; the sandbox's cell pool bounds the real concurrency.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import sys
import urllib.error
import urllib.request
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from longrl.errors import UserError
from longrl.rewards.sandbox.executor import Limits, RunResult, Sandbox, check_language
from longrl.rewards.sandbox.harness import Evaluation, evaluate, parse_reference

MAX_BODY = 64 << 20  # bytes per request: code plus test cases of one response


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
    return Limits(**d)


def make_handler(sb: Sandbox, token: str | None) -> type[BaseHTTPRequestHandler]:
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
                if not isinstance(req, dict) or not isinstance(req.get("code"), str):
                    raise ValueError("request must be a JSON object with a 'code' string")
                lang = str(req.get("lang", "python"))
                check_language(lang, sb.languages)
                if self.path == "/run":
                    stdin = req.get("stdin", "")
                    if not isinstance(stdin, str):
                        raise ValueError("'stdin' must be a string")
                    res = sb.run(req["code"], lang, stdin.encode(), _limits(sb, req))
                    return self._reply(200, res.to_dict())
                if self.path == "/evaluate":
                    ref = parse_reference(req.get("reference"))
                    return self._reply(200, evaluate(sb, req["code"], lang, ref).to_dict())
                return self._reply(404, {"error": f"no such endpoint {self.path}"})
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
    """Talks to ``longrl sandbox serve``; the same ``run`` / ``evaluate`` as the local sandbox.

    The constructor checks ``/health``: a server that cannot be reached, or that rejects the
    token, is a :class:`UserError` at start-up rather than a failure in the middle of a run.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
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

    def run(self, code: str, lang: str = "python", stdin: bytes | str = b"", limits: Limits | None = None) -> RunResult:
        check_language(lang)
        body: dict[str, Any] = {"code": code, "lang": lang,
                                "stdin": stdin.decode("utf-8", "replace") if isinstance(stdin, bytes) else stdin}
        if limits is not None:
            body.update(time_limit=limits.time_s, memory_mb=limits.memory_mb)
        d = self._post("/run", body)
        return RunResult(str(d["status"]), d.get("exit_code"), str(d.get("stdout", "")).encode(),
                         str(d.get("stderr", "")).encode(), float(d.get("wall_s", 0.0)))

    def evaluate(self, code: str, lang: str, reference: Any) -> Evaluation:
        return Evaluation.from_dict(self._post("/evaluate", {"code": code, "lang": lang, "reference": reference}))

    def close(self) -> None:
        pass
