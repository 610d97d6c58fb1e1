"""A local OpenAI-compatible endpoint for tests: it lists one model and answers chat completions.

A test subclasses :class:`StubOpenAI` with its ``model_id`` and ``reply(body) -> str`` (a reply that
raises ``ValueError`` answers HTTP 500), and serves it with :func:`serve`; ``server.seen`` collects
``record(body)`` of every request.
"""

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubOpenAI(BaseHTTPRequestHandler):
    model_id = "stub-model"

    def reply(self, body: dict) -> str:
        raise NotImplementedError

    def record(self, body: dict):
        return body

    def log_message(self, *args):
        pass

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": self.model_id, "object": "model", "created": 0,
                                                         "owned_by": "t"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(self.record(body))
        try:
            text = self.reply(body)
        except ValueError:
            self._send(500, {"error": {"message": "boom"}})
            return
        self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()),
                                   "total_tokens": 10 + len(text.split())}})


@contextmanager
def serve(handler: type[StubOpenAI]):
    """``(server, base_url)`` of ``handler`` served on a free local port until the block ends."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.seen = []
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()
