"""Issue 12: a cache that never loses others' entries, honest deadlines, no head-of-line stall
from one huge text, no secret in a repr, clear answers to malformed input.

Real model, real servers on 127.0.0.1 and real subprocesses; stubs only inject faults (an
endpoint that never answers, a queue that is slow to enqueue, a process killed mid-write).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest

from agent_embeddings import (
    BackendTimeoutError,
    EmbeddingGeneratorManager,
    InvalidInputError,
    SpecError,
    load_spec,
)
from agent_embeddings.batching import MicroBatcher, MicroBatching
from agent_embeddings.cache import DiskCache
from agent_embeddings.caching import keys_for
from agent_embeddings.protocol.convert import pb
from agent_embeddings.server.config import ServerConfig
from agent_embeddings.server.http import serve_in_thread

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOL = 1e-5


def hf_item(name: str, **params: object) -> dict:
    return {"llm_type": "embeddings", "name": name, "llm_block_id": f"hf:{MINILM}", "llm_parameters": params}


def manager_of(*items: dict) -> EmbeddingGeneratorManager:
    return EmbeddingGeneratorManager.from_subject_spec({"subject_id": "t", "models": list(items)})


# -- 1. a width mismatch overwrites that key alone ------------------------------------------------
def test_a_stale_width_is_recomputed_for_its_key_alone_and_others_keep_every_entry(hf_manager, sentences, tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    manager = manager_of(
        hf_item("a", cache={"kind": "disk", "path": path}),
        hf_item("b", cache={"kind": "disk", "path": path}, dimensions=128),  # another namespace, same file
    )
    a, b = manager.get("a"), manager.get("b")
    b.encode(sentences)  # b's entries
    keys_a = keys_for(a.cache_namespace(), sentences[:3])
    a.cache.put_many([(k, np.ones(5, np.float32)) for k in keys_a])  # an older deployment's 5-wide vectors
    assert a.cache.size() == len(sentences) + 3

    result = a.embed(sentences)
    assert np.abs(result.vectors - hf_manager.encode("hf", sentences)).max() <= TOL
    assert result.cache_hits == 0  # the stale hits were recomputed, not served
    assert b.embed(sentences).cache_hits == len(sentences)  # the other generator lost nothing
    again = a.embed(sentences)  # the recomputed vectors were stored, over the stale ones
    assert again.cache_hits == len(sentences) and again.vectors.shape == (len(sentences), 384)
    assert a.cache.size() == 2 * len(sentences)
    manager.close()


async def test_a_stale_width_is_recomputed_on_the_async_path_too(hf_manager, sentences, tmp_path):
    manager = manager_of(hf_item("a", cache={"kind": "disk", "path": str(tmp_path / "c.sqlite3")}))
    gen = manager.get("a")
    keys = keys_for(gen.cache_namespace(), sentences[:2])
    gen.cache.put_many([(k, np.ones(5, np.float32)) for k in keys])
    result = await gen.aembed(sentences[:4])
    assert np.abs(result.vectors - hf_manager.encode("hf", sentences[:4])).max() <= TOL
    assert (await gen.aembed(sentences[:4])).cache_hits == 4
    manager.close()


# -- 2. an honest size, and eviction that is LRU -------------------------------------------------
def test_disk_cache_size_counts_rows_and_eviction_is_least_recently_used(tmp_path, hf_manager, sentences):
    cache = DiskCache(tmp_path / "lru.sqlite3", max_entries=3)
    for _ in range(5):  # one key rewritten five times is one row
        cache.put_many([("a", np.zeros(2, np.float32))])
    assert cache.size() == 1
    cache.put_many([("a", np.zeros(2, np.float32)), ("a", np.ones(2, np.float32))])  # twice in one batch
    assert cache.size() == 1 and cache.get_many(["a"])[0].tolist() == [1.0, 1.0]
    cache.put_many([("b", np.ones(2, np.float32))])
    cache.put_many([("c", np.ones(2, np.float32))])
    assert cache.get_many(["a"])[0] is not None  # a read makes "a" the most recently used
    cache.put_many([("d", np.ones(2, np.float32))])
    assert [v is not None for v in cache.get_many(["a", "b", "c", "d"])] == [True, False, True, True]
    assert cache.size() == 3
    cache.get_many(["a"])
    cache.get_many(["d"])  # "c" is now the least recently used
    other = DiskCache(tmp_path / "lru.sqlite3", max_entries=3)  # another process sharing the file
    other.put_many([("e", np.ones(2, np.float32))])
    assert cache.size() == 3 and [v is not None for v in cache.get_many(["a", "c", "d", "e"])] == [True, False, True, True]

    manager = manager_of(hf_item("m", cache={"kind": "disk", "path": str(tmp_path / "m.sqlite3")}))
    manager.encode("m", sentences[:2])
    manager.encode("m", sentences[:2])
    assert manager.stats()["m"]["cache"]["size"] == 2  # the figure manager.stats() and Prometheus show
    manager.close()


_WRITER = """
import sys
import numpy as np
from agent_embeddings.cache import DiskCache
from agent_embeddings.caching import keys_for
cache = DiskCache(sys.argv[1], max_entries=1_000_000)
for batch in range(100_000):
    cache.put_many([(f"{batch}-{j}", np.full(64, batch, np.float32)) for j in range(50)])
    print(batch, flush=True)
"""


def test_a_process_killed_while_writing_the_disk_cache_loses_no_committed_entry(tmp_path):
    path = tmp_path / "killed.sqlite3"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    committed = -1
    for line in writer.stdout:  # kill it in the middle of a run of writes
        committed = int(line)
        if committed >= 40:
            break
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL

    cache = DiskCache(path, max_entries=1_000_000)
    for batch in range(committed + 1):  # every batch reported committed is there, with its values
        found = cache.get_many([f"{batch}-{j}" for j in range(50)])
        assert all(v is not None and v[0] == batch and v.shape == (64,) for v in found), batch
    in_flight = [v is not None for v in cache.get_many([f"{committed + 1}-{j}" for j in range(50)])]
    assert all(in_flight) or not any(in_flight)  # the batch being written: all or nothing
    import sqlite3

    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cache.put_many([("after", np.ones(64, np.float32))])  # and it takes writes again
    assert cache.get_many(["after"])[0] is not None and cache.errors == 0


# -- 3. deadlines that are deadlines -------------------------------------------------------------
@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a stalled endpoint)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


# Slack over the deadline: connection set-up, thread hand-offs and error translation on a busy
# CI box. Before the fix these calls took 4.2 s (3 tries) and 7.3 s (4 tries) for a 1 s deadline;
# later one async call took 2.0 s on a loaded CI box: its first try's timeout started only after
# the event loop's AsyncOpenAI was made (a CA bundle loaded, 25-60 ms idle), now inside the try,
# and cheap (one TLS context per process, remote.default_tls).
DEADLINE_SLACK_S = 0.75


@pytest.mark.parametrize("attempts", [3, 4])
def test_openai_call_with_retries_ends_within_its_deadline(silent_endpoint, attempts):
    manager = manager_of({
        "llm_type": "embeddings", "name": "oa", "llm_block_id": "openai:m",
        "llm_parameters": {"base_url": silent_endpoint, "timeout": 0.4,
                           "retry": {"attempts": attempts, "deadline_s": 1.0}},
    })
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError):
        manager.generate("oa", "hello")
    assert time.monotonic() - started < 1.0 + DEADLINE_SLACK_S
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError):
        asyncio.run(manager.agenerate("oa", "hello"))
    assert time.monotonic() - started < 1.0 + DEADLINE_SLACK_S
    # 0.4 s tries: it did retry, within the budget. One retry of two calls, not one each: a try that a
    # busy box delays past 0.92 s leaves no room for the next within the 1 s (seen once under make test)
    assert manager.stats()["oa"]["retries"] >= 1
    manager.close()


# -- 4. close and submit cannot race -------------------------------------------------------------
class _SlowToEnqueue:
    """Fault injection: a queue whose put of a request takes 2 ms (the stop marker goes in at once),
    which widens the window between a submitter's closed-check and its enqueue."""

    def __init__(self, inner: object, stop: object) -> None:
        self.inner, self.stop = inner, stop

    def put(self, item: object) -> None:
        if item is not self.stop:
            time.sleep(0.002)
        self.inner.put(item)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_submitters_racing_close_each_get_an_answer_or_a_clear_error():
    from agent_embeddings import batching

    def submit_many(batcher: MicroBatcher, go: threading.Event, futures: list[Future]) -> None:
        go.wait()
        for _ in range(10):
            futures.append(batcher.submit(["x"]))

    for _round in range(20):
        batcher = MicroBatcher(lambda texts: np.ones((len(texts), 2), np.float32), MicroBatching(max_wait_ms=0.5))
        batcher._queue = _SlowToEnqueue(batcher._queue, batching._STOP)  # type: ignore[assignment]
        futures: list[Future] = []
        go = threading.Event()
        threads = [threading.Thread(target=submit_many, args=(batcher, go, futures)) for _ in range(8)]
        for t in threads:
            t.start()
        go.set()
        time.sleep(0.004)
        batcher.close()
        for t in threads:
            t.join()
        for future in futures:  # nobody waits forever
            try:
                result = future.result(timeout=5)  # a lone request gets the raw rows, a shared one a BackendResult
                assert np.asarray(getattr(result, "vectors", result)).shape == (1, 2)
            except RuntimeError as exc:
                assert "micro-batcher is closed" in str(exc)


# -- 5. no secret in a repr, an error or a listing -----------------------------------------------
def test_literal_secrets_never_show_in_reprs_errors_logs_or_listings(caplog, capsys, tmp_path, runner):
    key, token = "sk-planted-literal-0123456789", "tok-planted-9876543210"
    item = {"llm_type": "embeddings", "name": "oa", "llm_block_id": "openai:m",
            "llm_parameters": {"base_url": "http://127.0.0.1:9/v1", "api_key": key,
                               "default_headers": {"Authorization": f"Bearer {token}"}}}
    spec = {"subject_id": "s", "models": [item], "vault": {"password": key}}
    caplog.set_level(logging.DEBUG, logger="agent_embeddings")
    with pytest.warns(UserWarning, match="literal key"):
        manager = EmbeddingGeneratorManager.from_subject_spec(spec)
    shown = [repr(manager.spec), str(manager.spec), repr(manager.spec.models[0]), str(manager.spec.models[0]),
             repr(manager.get("oa")), repr(manager.list_generators())]
    with pytest.raises(SpecError) as bad:
        load_spec({**spec, "models": [{**item, "llm_type": 7}]})  # a spec error in the item holding the key
    shown.append(str(bad.value))
    with pytest.raises(SpecError) as bad:  # another field wrong in the same item
        manager_of({**item, "llm_parameters": {**item["llm_parameters"], "batch_size": "64"}})
    shown.append(str(bad.value))
    logging.getLogger("agent_embeddings.test").warning("sending %s with %s", key, f"Authorization: Bearer {token}")
    with serve_in_thread(manager) as server:
        shown.append(httpx.get(f"http://{server.address}/v1/models").text)
        shown.append(httpx.get(f"http://{server.address}/metrics").text)
    grpc_server = runner.grpc_server(manager)
    try:
        from agent_embeddings.protocol.gen.aios.embeddings.v1.embeddings_pb2_grpc import EmbeddingServiceStub

        with grpc.insecure_channel(grpc_server.address) as channel:
            shown.append(str(EmbeddingServiceStub(channel).Info(pb.InfoRequest(), timeout=10)))
    finally:
        runner.stop(grpc_server)
    from agent_embeddings.cli import main

    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    with pytest.warns(UserWarning, match="literal key"):
        assert main(["validate", str(spec_file)]) == 0
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps({**spec, "models": [{**item, "llm_parameters": {"api_key": key, "dims": "x"}}]}))
    assert main(["validate", str(bad_file)]) == 1
    out = capsys.readouterr()
    shown += [out.out, out.err, caplog.text]
    assert "openai:m" in shown[0] and "oa" in out.out  # the texts are really there
    for text in shown:
        assert key not in text and token not in text
    manager.close()


# -- 6. one huge text stalls nobody --------------------------------------------------------------
WORDS = "retrieval agents embed their knowledge corpus and then their queries ".split()
HUGE = " ".join(WORDS[i % len(WORDS)] for i in range(1_500_000))[:10_000_000]  # 10 MB


def test_a_huge_text_is_cut_to_what_the_model_reads(hf_manager):
    gen = hf_manager.get("hf")
    limit = gen._input_limit(gen._model())
    assert limit == 256 * 32  # max_seq_length x MAX_CHARS_PER_TOKEN
    result = hf_manager.embed("hf", [HUGE])
    cut = hf_manager.embed("hf", [HUGE[:limit]])
    assert np.abs(result.vectors - cut.vectors).max() <= TOL
    assert result.prompt_tokens == cut.prompt_tokens == 256  # usage counts what the model read


# Before the fix the one-word request waited 14 s behind the 10 MB one (HTTP; 15 s over gRPC);
# alone it takes ~20 ms. The bound leaves a loaded CI box ample room and still fails the old code.
STALL_BOUND_S = 3.0


def _during(big: object, small: object) -> float:
    """Seconds ``small()`` takes while ``big()`` runs on another thread."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(big)  # type: ignore[arg-type]
        time.sleep(0.3)  # the huge request is in the server
        started = time.perf_counter()
        small()  # type: ignore[operator]
        took = time.perf_counter() - started
        pending.result(timeout=60)
    return took


def test_a_huge_text_does_not_stall_other_clients_of_either_server(hf_manager, runner):
    with serve_in_thread(hf_manager) as server:
        base = f"http://{server.address}/v1/embeddings"
        with httpx.Client(timeout=60) as one, httpx.Client(timeout=60) as two:
            big = lambda: one.post(base, json={"model": "hf", "input": HUGE}).raise_for_status()  # noqa: E731
            small = lambda: two.post(base, json={"model": "hf", "input": "hello"}).raise_for_status()  # noqa: E731
            assert _during(big, small) < STALL_BOUND_S
    grpc_server = runner.grpc_server(hf_manager)
    try:
        from agent_embeddings.protocol.gen.aios.embeddings.v1.embeddings_pb2_grpc import EmbeddingServiceStub

        options = [("grpc.max_send_message_length", -1)]
        with grpc.insecure_channel(grpc_server.address, options) as a, grpc.insecure_channel(grpc_server.address) as b:
            big = lambda: EmbeddingServiceStub(a).Embed(pb.EmbedRequest(model="hf", inputs=[HUGE]), timeout=60)  # noqa: E731
            small = lambda: EmbeddingServiceStub(b).Embed(pb.EmbedRequest(model="hf", inputs=["hi"]), timeout=60)  # noqa: E731
            assert _during(big, small) < STALL_BOUND_S
    finally:
        runner.stop(grpc_server)


def test_servers_refuse_texts_over_max_input_chars_naming_the_limit(hf_manager, runner):
    config = ServerConfig(max_input_chars=1000)
    with serve_in_thread(hf_manager, config=config) as server:
        url = f"http://{server.address}/v1/embeddings"
        refused = httpx.post(url, json={"model": "hf", "input": ["short", "x" * 1001]})
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["code"] == "input_too_long" and "input[1]" in error["message"] and "1000" in error["message"]
        assert httpx.post(url, json={"model": "hf", "input": "x" * 1000}).status_code == 200
    grpc_server = runner.grpc_server(hf_manager, config)
    try:
        from agent_embeddings.protocol.gen.aios.embeddings.v1.embeddings_pb2_grpc import EmbeddingServiceStub

        with grpc.insecure_channel(grpc_server.address) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                EmbeddingServiceStub(channel).Embed(pb.EmbedRequest(model="hf", inputs=["x" * 1001]), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "1000" in caught.value.details()
    finally:
        runner.stop(grpc_server)


# -- 7. invalid Unicode and undecodable bytes are the client's fault -----------------------------
def test_a_lone_surrogate_is_a_400_naming_the_input_and_the_server_keeps_serving(hf_manager):
    with pytest.raises(InvalidInputError, match=r"texts\[1\] is not valid Unicode"):
        hf_manager.encode("hf", ["fine", "\ud800"])
    with serve_in_thread(hf_manager) as server:
        url = f"http://{server.address}/v1/embeddings"
        body = '{"model": "hf", "input": ["fine", "bad \\ud800 text"]}'  # valid JSON, invalid Unicode
        refused = httpx.post(url, content=body, headers={"content-type": "application/json"})
        assert refused.status_code == 400, refused.text
        assert "input[1]" in refused.json()["error"]["message"]
        assert httpx.post(url, json={"model": "hf", "input": "fine"}).status_code == 200


def test_undecodable_grpc_bytes_are_invalid_argument_without_a_traceback(hf_manager, runner, caplog):
    caplog.set_level(logging.DEBUG)
    server = runner.grpc_server(hf_manager)
    good = pb.EmbedRequest(model="hf", inputs=["ab"]).SerializeToString()
    requests = {"Embed": good, "Info": pb.InfoRequest(model="ab").SerializeToString()}
    try:
        with grpc.insecure_channel(server.address) as channel:
            for method, request in requests.items():
                call = channel.unary_unary(f"/aios.embeddings.v1.EmbeddingService/{method}",
                                           request_serializer=lambda b: b, response_deserializer=lambda b: b)
                for payload in (request.replace(b"ab", b"\xed\xa0"), b"\xff\xff\xff\xff garbage"):
                    with pytest.raises(grpc.RpcError) as caught:
                        call(payload, timeout=10)
                    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert "is not a valid aios.embeddings.v1" in caught.value.details()
            ok = channel.unary_unary("/aios.embeddings.v1.EmbeddingService/Embed",
                                     request_serializer=lambda b: b, response_deserializer=pb.EmbedResponse.FromString)
            assert ok(good, timeout=10).rows == 1  # still serving
    finally:
        runner.stop(server)
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- 8. strict numbers on the HTTP API -----------------------------------------------------------
def test_http_numbers_are_strict(hf_manager):
    with serve_in_thread(hf_manager) as server:
        url = f"http://{server.address}/v1/embeddings"
        for dimensions in ("12", 12.0, True):
            refused = httpx.post(url, json={"model": "hf", "input": "x", "dimensions": dimensions})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "dimensions", dimensions
        accepted = httpx.post(url, json={"model": "hf", "input": "x", "dimensions": 12})
        assert accepted.status_code == 200 and len(accepted.json()["data"][0]["embedding"]) == 12


def test_the_hf_cut_is_configurable(hf_manager):
    manager = manager_of(hf_item("short", max_input_chars=20))
    gen = manager.get("short")
    text = "a sentence of twenty and a tail that is cut"
    assert np.abs(gen.encode([text]) - hf_manager.encode("hf", [text[:20]])).max() <= TOL
    assert np.abs(gen.encode([text]) - hf_manager.encode("hf", [text])).max() > 0.01
    manager.close()


# -- issue 19 ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_concurrency", 0), ("max_concurrency", -1), ("max_inputs", 0), ("max_inputs", True),
        ("max_request_bytes", -1), ("max_request_bytes", 2**31), ("max_input_chars", -3), ("max_input_chars", 0),
        ("grace_period_s", float("nan")), ("grace_period_s", -5.0), ("grace_period_s", float("inf")),
        ("metrics_port", -1), ("metrics_port", 65536), ("max_inputs", "8"),
    ],
)
def test_finding_15_server_config_refuses_a_bad_limit_naming_the_setting_and_its_flag(setting, value):
    """The Python API builds servers too: ServerConfig itself refuses what would lock a server up."""
    from agent_embeddings.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as excinfo:
        ServerConfig(**{setting: value})
    message = str(excinfo.value)
    flag = "--" + setting.removesuffix("_s").replace("_", "-")
    assert setting in message and flag in message and repr(value) in message and "\n" not in message
    # the edges of what is accepted
    ServerConfig(max_concurrency=1, max_inputs=1, max_request_bytes=2**31 - 1, max_input_chars=None,
                 grace_period_s=0, metrics_port=0)
