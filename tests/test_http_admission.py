"""The HTTP server's admission (key, media type, size, slot) before the body, and an admitted request as a
cancellable unit: a client that hangs up, a shutdown that cuts requests off. Real uvicorn, the real model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import SecretStr

from agent_embeddings import EmbeddingGeneratorManager
from agent_embeddings.server.config import ServerConfig
from agent_embeddings.server.http import serve_in_thread
from agent_embeddings.server.process import ServeProcess

from ._raw_http import connect, post_head, read_answer
from .fakes import SlowGenerator

ENV = {"HF_HUB_OFFLINE": "1", "AGENT_EMBEDDINGS_LOAD_PLUGINS": ""}


def _passages(sentences: list[str], n: int) -> list[str]:
    """``n`` distinct passages of about 180 tokens: 1,500 are tens of seconds of work for the model on two cores."""
    return [f"{' '.join(sentences * 3)} ({i})" for i in range(n)]


def _small_passes_spec(tmp_path: Path) -> Path:
    """The default model (backend auto, as the default spec: the model ``hf_manager`` loaded) with batches of
    4: forward passes of at most 4 x 32 padded tokens (one passage), so that what the tests time (the pass
    a worker finishes before it stops) stays short on a busy box."""
    spec = {"subject_id": "t", "subject_type": "agent", "models": [{
        "llm_type": "embeddings", "name": "hf-minilm", "llm_block_id": "hf:sentence-transformers/all-MiniLM-L6-v2",
        "llm_parameters": {"device": "cpu", "backend": "auto", "batch_size": 4, "normalize": True}}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def _in_flight(address: str) -> float:
    """The server's http requests in flight, from /metrics (the /metrics request itself included)."""
    for line in httpx.get(f"http://{address}/metrics", timeout=30).text.splitlines():
        if line.startswith('agent_embeddings_requests_in_flight{server="http"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def small_passes(hf_manager: EmbeddingGeneratorManager, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        EmbeddingGeneratorManager]:
    """The default model (shared with ``hf_manager``, already loaded) in batches of 4."""
    manager = EmbeddingGeneratorManager.from_subject_spec(_small_passes_spec(tmp_path_factory.mktemp("spec")))
    manager.warm_up()
    yield manager
    manager.close()


def test_finding_01_hung_up_requests_free_their_slots_and_the_model_at_once(small_passes, sentences):
    """The issue's scenario at test scale: --max-concurrency 2, two clients post 1,500 passages and hang
    up after about a second; a new request must be served at once, not after the dead work (base: 429
    for minutes, until the model has embedded all 3,000 passages for nobody)."""
    body = json.dumps({"model": "hf", "input": _passages(sentences, 1500)}).encode()
    with serve_in_thread(small_passes, config=ServerConfig(max_concurrency=2)) as srv:
        url = f"http://{srv.address}/v1/embeddings"
        sent = time.monotonic()
        clients = [connect(srv.address) for _ in range(2)]
        for sock in clients:
            sock.sendall(post_head("/v1/embeddings", len(body)) + body)
        while _in_flight(srv.address) < 3:  # both inside the app, with the /metrics request
            assert time.monotonic() - sent < 30
            time.sleep(0.05)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - sent)))
        assert httpx.post(url, json={"model": "hf", "input": "x"}, timeout=30).status_code == 429  # both slots held
        for sock in clients:
            sock.close()  # the clients hang up
        hung_up = time.monotonic()
        statuses = []
        while time.monotonic() - hung_up < 15:
            answer = httpx.post(url, json={"model": "hf", "input": "a new request"}, timeout=30)
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                break
            time.sleep(0.02)
        served_after = time.monotonic() - hung_up
        # Target: 1 s on an idle machine. The margin is for a shared two-core box, where the forward
        # pass the worker finishes before it stops can take a few times longer; base takes minutes.
        assert statuses[-1] == 200 and served_after < 5, (served_after, statuses[-3:])
        left = [line for line in httpx.get(f"http://{srv.address}/metrics").text.splitlines()
                if line.startswith("agent_embeddings_requests_total") and 'status="499"' in line]
        assert len(left) == 1 and left[0].endswith(" 2.0"), left  # counted as left: neither served nor failed
        print(f"finding 1: a new request was served {served_after:.2f} s after the hang-up")


def test_finding_02_refusals_come_before_the_body():
    """401, 415, 413 and 429 are answered from the head alone: not a byte of the 10 MB body is sent."""
    gate = SlowGenerator(delay_s=30)
    manager = EmbeddingGeneratorManager()
    manager.register_generator("gate", gate)
    config = ServerConfig(api_keys=(SecretStr("k-right"),), max_concurrency=1, max_request_bytes=1024 * 1024)
    ten_mb = 10 * 1024 * 1024
    with serve_in_thread(manager, config=config) as srv:
        def head_only(length: int, **headers: str) -> tuple[int | None, dict[str, str], float]:
            sock = connect(srv.address)
            started = time.monotonic()
            sock.sendall(post_head("/v1/embeddings", length, **headers))
            answer = read_answer(sock, timeout=10)
            sock.close()
            if answer is None:
                return None, {}, 0.0
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
            return answer.status, answer.headers, time.monotonic() - started

        status, headers, _ = head_only(500_000)  # no key, a body within the limit (base: waits for it)
        assert status == 401 and headers.get("connection") == "close"
        assert head_only(ten_mb)[0] == 401  # the key comes first: nothing about the server's limits without one
        assert head_only(ten_mb, Authorization="Bearer k-wrong")[0] == 401
        assert head_only(100, Authorization="Bearer k-right", content_type="text/plain")[0] == 415
        assert head_only(ten_mb, Authorization="Bearer k-right")[0] == 413  # the announced length
        client = openai.OpenAI(base_url=f"http://{srv.address}/v1", api_key="k-right", max_retries=0)
        worker = threading.Thread(target=lambda: client.embeddings.create(model="gate", input="held"))
        worker.start()
        assert gate.started.wait(10)
        status, headers, _ = head_only(500_000, Authorization="Bearer k-right")  # the one slot is held
        assert status == 429 and headers["retry-after"] == "1"
        gate.release.set()
        worker.join(10)
        # a chunked body is counted as it comes and cut at the limit
        chunks = (b"x" * 65536 for _ in range(40))
        over = httpx.post(f"http://{srv.address}/v1/embeddings", content=chunks, timeout=10,
                          headers={"content-type": "application/json", "authorization": "Bearer k-right"})
        assert over.status_code == 413 and over.json()["error"]["code"] == "request_too_large"
        assert client.embeddings.create(model="gate", input="after all that").data[0].embedding == [1.0, 2.0]


def test_finding_02_unauthenticated_uploads_cost_the_server_no_memory(default_spec: Path):
    """100 concurrent 10 MB uploads without a key (the issue: RSS 534 MB -> 1,379 MB, each 401 after the
    full upload): each 401 arrives after the head, the server never reads the bodies, RSS stays flat."""
    ten_mb = 10 * 1024 * 1024
    body = memoryview(bytes(ten_mb))
    env = {**ENV, "TEST_KEY": "k-right"}
    with ServeProcess(default_spec, http="127.0.0.1:0", args=["--api-key-ref", "env:TEST_KEY"], env=env) as served:
        address = served.addresses["http"]
        status_file = Path(f"/proc/{served.pid}/status")

        def rss_mb() -> float:
            line = next(x for x in status_file.read_text().splitlines() if x.startswith("VmRSS:"))
            return int(line.split()[1]) / 1024

        before = rss_mb()
        peak = [before]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak.append(rss_mb())
                time.sleep(0.01)

        answers: list[int | None] = [None] * 100

        def upload(i: int) -> None:
            sock = connect(address, timeout=30)
            try:
                sock.sendall(post_head("/v1/embeddings", ten_mb) + body[:65536])
                answer = read_answer(sock, timeout=20)  # before the other 10 MB are sent
                answers[i] = answer.status if answer else None
                sock.sendall(body[65536:])  # then try to upload the rest anyway
            except OSError:
                pass  # the server closed the connection on the unread body: nothing more to send
            finally:
                sock.close()

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        threads = [threading.Thread(target=upload, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sampling.set()
        sampler.join()
        elapsed = time.monotonic() - started
        growth = max(peak) - before
        assert answers == [401] * 100, answers
        assert growth < 100, f"RSS grew {growth:.0f} MB"
        print(f"finding 2: RSS {before:.0f} MB -> peak {max(peak):.0f} MB (+{growth:.0f}) for 100 x 10 MB "
              f"uploads without a key, all 401 from the head, in {elapsed:.1f} s")
        client = openai.OpenAI(base_url=f"http://{address}/v1", api_key="k-right", max_retries=0)
        assert len(client.embeddings.create(model="hf", input="still serving").data) == 1


def test_finding_13_nested_json_is_400_and_only_json_is_read(hf_manager):
    with serve_in_thread(hf_manager) as srv:
        url = f"http://{srv.address}/v1/embeddings"
        client = openai.OpenAI(base_url=f"http://{srv.address}/v1", api_key="-", max_retries=0)
        for depth in (100_000, 5000, 300):  # base: 500 and a RecursionError traceback in the log
            nested = b'{"model": "hf", "input": ' + b"[" * depth + b"]" * depth + b"}"
            answer = httpx.post(url, content=nested, headers={"content-type": "application/json"}, timeout=30)
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json", answer.text
            assert len(client.embeddings.create(model="hf", input="after nesting").data) == 1
        good = json.dumps({"model": "hf", "input": "x"}).encode()
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                             None):
            headers = {"content-type": content_type} if content_type else {}
            answer = httpx.post(url, content=good, headers=headers, timeout=30)
            assert answer.status_code == 415, (content_type, answer.status_code)
            assert answer.json()["error"]["code"] == "unsupported_media_type"
        for content_type in ("application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"):
            assert httpx.post(url, content=good, headers={"content-type": content_type}, timeout=30).status_code == 200


def test_finding_14_shutdown_answers_503_and_the_process_exits_within_the_grace_period(tmp_path, sentences):
    """SIGTERM with --grace-period 2 and a request that needs minutes: it is answered 503 in OpenAI's shape
    at the end of the grace period, its work stops, and the process exits within grace + 2 s (base: a
    plain-text 500 at 2 s, then the process waits for the model to finish: 49 s in the issue)."""
    grace = 2.0
    args = ["--grace-period", str(grace)]
    with ServeProcess(_small_passes_spec(tmp_path), http="127.0.0.1:0", args=args, env=ENV) as served:
        address = served.addresses["http"]
        answer: list[httpx.Response] = []
        body = {"model": "hf", "input": _passages(sentences, 1500)}
        worker = threading.Thread(target=lambda: answer.append(
            httpx.post(f"http://{address}/v1/embeddings", json=body, timeout=120)))
        worker.start()
        deadline = time.monotonic() + 60
        while _in_flight(address) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # in the model
        os.kill(served.pid, signal.SIGTERM)
        term = time.monotonic()
        worker.join(60)
        answered = time.monotonic() - term
        try:
            code: int | None = served.wait(timeout_s=30)  # the one SIGTERM above, not a second
        except subprocess.TimeoutExpired:
            code = None  # still waiting for its model thread
        exited = time.monotonic() - term
    response = answer[0]
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.json()["error"]["code"] == "server_shutting_down"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert grace - 0.5 < answered < grace + 1.5, answered
    # Target: grace + 2 s (measured 2.9-3.7 s here). The margin is for a shared two-core box under
    # load, where the forward pass a worker finishes and the interpreter's teardown take several
    # times longer than on an idle one; base exits only when the model has done all 1,500 passages.
    assert code == 0 and exited < grace + 4, (code, exited, served.output[-2000:])
    assert "Traceback" not in served.output
    print(f"finding 14: answered 503 {answered:.2f} s and exited {exited:.2f} s after SIGTERM (grace {grace} s)")


def test_a_crash_on_the_embeddings_route_is_answered_500_in_openai_shape_and_counted(monkeypatch):
    """POST /v1/embeddings skips the framework's error middleware (http_app._App): a bug in its
    chain is still answered 500 in OpenAI's shape, logged with its traceback, and counted."""
    from agent_embeddings.server import http_admission

    from .fakes import CharStats

    manager = EmbeddingGeneratorManager()
    manager.register_generator("chars", CharStats(normalize=True))

    async def broken(receive, limit):
        raise RuntimeError("a bug in the admission")

    with serve_in_thread(manager) as server:
        base = f"http://{server.address}"
        assert httpx.post(f"{base}/v1/embeddings", json={"model": "chars", "input": "abc"}).status_code == 200
        monkeypatch.setattr(http_admission, "_read_body", broken)
        answer = httpx.post(f"{base}/v1/embeddings", json={"model": "chars", "input": "abc"})
        assert answer.status_code == 500, answer.text
        assert answer.json()["error"] == {"message": "Internal server error; see the server log.", "type": "server_error",
                                          "param": None, "code": None}
        metrics = httpx.get(f"{base}/metrics").text
        assert 'agent_embeddings_requests_total{route="/v1/embeddings",server="http",status="500"} 1.0' in metrics
        assert 'agent_embeddings_request_errors_total{server="http",type="server_error"} 1.0' in metrics
        monkeypatch.undo()
        assert httpx.post(f"{base}/v1/embeddings", json={"model": "chars", "input": "abc"}).status_code == 200
