"""The HTTP protocol's bounds (431 for a huge head, read timeouts for slow clients), with raw sockets against a
real uvicorn; the server keeps serving after each fault."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from agent_embeddings.server.config import ServerConfig
from agent_embeddings.server.http import HttpServer, serve_in_thread

from ._raw_http import closed_by_peer, connect, post_head, read_answer, request_head


@pytest.fixture(scope="module")
def server(hf_manager):
    config = ServerConfig(read_timeout_s=2.0, max_concurrency=1)
    with serve_in_thread(hf_manager, config=config) as srv:
        yield srv


def _still_serving(server: HttpServer) -> None:
    answer = httpx.post(f"http://{server.address}/v1/embeddings", json={"model": "hf", "input": "x"}, timeout=30)
    assert answer.status_code == 200, answer.text


def test_finding_12_trickling_and_idle_connections_are_closed_within_the_read_timeout(server):
    """The issue: ten connections trickling header bytes were all still open after 60 s."""
    trickling = [connect(server.address) for _ in range(10)]
    idle = connect(server.address)  # connects and sends nothing
    opened = time.monotonic()
    head = request_head("GET", "/health", {"X-Slow": "a" * 100})
    closed_at: dict[int, float] = {}
    answers = {}
    for i in range(len(head)):  # one byte per connection every 0.2 s, until the server gives up
        for n, sock in enumerate(trickling):
            if n in closed_at:
                continue
            try:
                sock.sendall(head[i : i + 1])
            except OSError:
                closed_at[n] = time.monotonic() - opened
        if len(closed_at) == len(trickling) or time.monotonic() - opened > 8:
            break
        time.sleep(0.2)
    for n, sock in enumerate(trickling):
        answer = read_answer(sock, timeout=0.5)  # a 408, unless the reset after our late bytes dropped it
        if answer is not None:
            answers[n] = answer.status
        if n not in closed_at and (answer is not None or closed_by_peer(sock, timeout=0.5)):
            closed_at[n] = time.monotonic() - opened
        sock.close()
    # read timeout 2 s; the margin covers a busy event loop and the 0.2 s steps of this loop
    assert len(closed_at) == 10, f"{10 - len(closed_at)} of 10 trickling connections still open after 8 s"
    assert max(closed_at.values()) < 5, closed_at
    assert set(answers.values()) <= {408}, answers
    assert closed_by_peer(idle, timeout=3)
    idle.close()
    stalled = connect(server.address)  # part of a head, then nothing: told why
    stalled.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
    answer = read_answer(stalled, timeout=5)
    stalled.close()
    assert answer is not None and answer.status == 408 and answer.json()["error"]["code"] == "request_timeout"
    _still_serving(server)


def test_finding_12_a_huge_head_is_refused_with_431_and_not_read(server):
    for head in (
        request_head("GET", "/health", {"X-Big": "a" * 100_000}),  # one header, in one read
        request_head("GET", "/health", {f"X-{i}": "b" * 1000 for i in range(100)}),  # many headers
        request_head("GET", "/health?" + "q" * 100_000),  # a long URL
    ):
        sock = connect(server.address)
        sock.sendall(head)
        answer = read_answer(sock)
        sock.close()
        assert answer is not None and answer.status == 431, answer
        assert answer.headers["connection"] == "close" and answer.json()["error"]["code"] == "request_header_too_large"
        _still_serving(server)
    # a 100 MB header, streamed: the server stops reading at its limit (the issue: read whole, then 200)
    sock = connect(server.address)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Huge: ")
    sent = 0
    try:
        while sent < 100 * 1024 * 1024:
            sock.sendall(b"c" * 65536)
            sent += 65536
    except OSError:
        pass
    sock.close()
    assert sent < 16 * 1024 * 1024, f"the server read {sent} bytes of one header"
    _still_serving(server)
    counted = [line for line in httpx.get(f"http://{server.address}/metrics").text.splitlines()
               if line.startswith("agent_embeddings_requests_total") and 'status="431"' in line]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 3  # counted as the app's answers are


def test_finding_12_a_body_that_stops_coming_frees_its_slot(server):
    """A client that announces a body and sends part of it holds its slot only until the read timeout."""
    sock = connect(server.address)
    sock.sendall(post_head("/v1/embeddings", 1000) + b'{"model": "hf", "input": "')
    url = f"http://{server.address}/v1/embeddings"
    meanwhile: list[int] = []
    probe = threading.Timer(0.3, lambda: meanwhile.append(
        httpx.post(url, json={"model": "hf", "input": "x"}, timeout=30).status_code))
    probe.start()
    assert closed_by_peer(sock, timeout=5)  # read timeout 2 s; base: open for good
    sock.close()
    probe.join()
    assert meanwhile == [429]  # max_concurrency 1: the slot was held while the body was awaited...
    _still_serving(server)  # ...and is free again


def test_a_malformed_request_gets_400_in_openai_shape(server):
    sock = connect(server.address)
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    answer = read_answer(sock)
    sock.close()
    assert answer is not None and answer.status == 400
    assert answer.json()["error"]["code"] == "invalid_http_request"
    _still_serving(server)


def test_header_bounds_are_checked_with_the_other_limits():
    from agent_embeddings.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"read_timeout_s \(--read-timeout\)"):
        ServerConfig(read_timeout_s=float("nan"))
    with pytest.raises(ConfigurationError, match=r"max_header_bytes \(--max-header-bytes\) must be an integer from 1024"):
        ServerConfig(max_header_bytes=10)
