"""A fault-injecting front for a real OpenAI-compatible server: scripted error replies, then forwarding.

Used by the bulk tests: the vectors come from our real server, only the faults are injected.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agent_embeddings.space import PROBES


class Front:
    """Replies ``faults`` in order (status, headers) to the first requests for corpus texts (the
    probe sentences are always forwarded), then forwards every request to ``upstream``. A fault's
    body is OpenAI's error shape with ``message``."""

    def __init__(self, upstream: str, faults: list[tuple[int, dict[str, str]]], message: str = "injected fault") -> None:
        self.upstream = upstream
        self.faults = list(faults)
        self.message = message
        self.injected: list[int] = []
        self.forwarded = 0
        self.lock = threading.Lock()

    def reply(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            fault = self.faults.pop(0) if self.faults and PROBES[0].encode() not in body else None
            if fault:
                self.injected.append(fault[0])
            else:
                self.forwarded += 1
        if fault:
            status, headers = fault
            return status, headers, json.dumps({"error": {"message": self.message, "type": "server_error"}}).encode()
        request = urllib.request.Request(f"{self.upstream}{path}", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, {}, answer.read()


@contextmanager
def faulty_front(
    upstream: str, faults: list[tuple[int, dict[str, str]]], message: str = "injected fault"
) -> Iterator[tuple[Front, str]]:
    """``(front, base_url)`` of a loopback server in front of ``upstream`` (``http://host:port``)."""
    front = Front(upstream, faults, message)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            status, headers, payload = front.reply(self.path, self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield front, f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
