"""Raw-socket HTTP for the server's fault tests: what no client library sends (a head without its
body, header bytes one at a time, a huge header), and each answer read as it comes."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(address: str, timeout: float = 10.0) -> socket.socket:
    host, _, port = address.rpartition(":")
    return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def post_head(path: str, length: int, *, content_type: str = "application/json", **headers: str) -> bytes:
    """The head of a POST announcing ``length`` body bytes (the body is the caller's to send, or not)."""
    fields = {"Content-Type": content_type, "Content-Length": str(length)}
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    return request_head("POST", path, fields)


def read_answer(sock: socket.socket, timeout: float = 10.0) -> Answer | None:
    """The next response on ``sock``, or None when the server closed (or reset) it without one, or
    sent nothing within ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (TimeoutError, ConnectionResetError):
        return None
    return Answer(int(lines[0].split()[1]), headers, body[:length])


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (whatever it sends first)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False
