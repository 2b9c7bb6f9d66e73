"""Fault injection the tests share: a server trickling bytes, and a bound on a call that may hang."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable


def outcome_within(call: Callable[[], object], seconds: float) -> tuple[list[BaseException | None], float]:
    """Run ``call`` in a thread for at most ``seconds`` (a regression fails in seconds, not at the
    suite's timeout): ``[None]`` or ``[the exception]``, ``[]`` while it still runs; and the time taken."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    return outcome, time.monotonic() - started


class Trickler:
    """A loopback HTTP server that answers every request one byte a second (status line, headers,
    body): each socket read gets a byte well within any read timeout, so only a deadline on the
    whole request ends it. Connections close when the client leaves or the server stops."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.interval_s = interval_s
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        body = b'{"object": "list", "data": []}' + b" " * 10_000
        answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        with conn:
            try:
                conn.recv(65536)
                for byte in answer:
                    if self.stop.wait(self.interval_s):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up: what the deadline is for

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
