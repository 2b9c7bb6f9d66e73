"""Issue 5: retries, fallback, caches, hooks and statistics, metrics, redaction, concurrency, faults.

The real model and real servers on 127.0.0.1; stubs only to inject faults (a backend failing
transiently, a stalled server, a replica stopped mid-run, a disk cache broken mid-run).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from agent_embeddings import (
    AbstractEmbeddingGenerator,
    AuthenticationError,
    BackendUnavailableError,
    BadRequestError,
    EmbeddingGeneratorManager,
    SpecError,
    hookimpl,
)
from agent_embeddings.cache import DiskCache, MemoryCache
from agent_embeddings.observability import redact
from agent_embeddings.plugins import register_plugin, unregister_plugin
from agent_embeddings.protocol.target import service_config
from agent_embeddings.retry import RetryPolicy, aretry_call, retry_call
from agent_embeddings.server.config import ServerConfig
from agent_embeddings.server.http import serve_in_thread

from ._grpc_support import StallingServicer, start_stub, wait_for
from .fakes import Flaky, SlowGenerator

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOL = 1e-5


def _hf_item(name: str = "local", **params: object) -> dict:
    return {"llm_type": "embeddings", "name": name, "llm_block_id": f"hf:{MINILM}", "llm_parameters": params}


# -- retries -------------------------------------------------------------------------------------
def test_transient_failures_are_retried_with_the_shared_loop(hf_manager, sentences):
    gen = Flaky(hf_manager.get("hf"), failures=2, retry=RetryPolicy(attempts=3, initial_backoff_s=0.01))
    expected = hf_manager.encode("hf", sentences)
    assert np.abs(gen.encode(sentences) - expected).max() <= TOL
    assert gen.calls == 3 and gen.stats.snapshot()["retries"] == 2
    # async path too
    gen.calls = 0
    assert np.abs(asyncio.run(gen.aencode(sentences)) - expected).max() <= TOL
    assert gen.calls == 3


def test_only_transient_errors_are_retried_and_the_deadline_bounds_them(hf_manager):
    bad = Flaky(hf_manager.get("hf"), failures=5, error=BadRequestError, retry=RetryPolicy(initial_backoff_s=0.01))
    with pytest.raises(BadRequestError):
        bad.encode(["x"])
    assert bad.calls == 1  # a bad request is final
    down = Flaky(hf_manager.get("hf"), failures=100,
                 retry=RetryPolicy(attempts=10, initial_backoff_s=0.2, max_backoff_s=0.2, deadline_s=0.5))
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        down.encode(["x"])
    # Each wait is 0.1-0.2 s (jitter on the upper half of 0.2 s) and no retry starts past 0.5 s:
    # at most 5 tries of the 10 allowed, and no wait overruns the deadline. The deadline is the
    # behaviour, so it stays timed: 0.3 s of slack covers the tries themselves (the real model, a few
    # ms each) and thread scheduling on a busy box; the 10 tries without a deadline take about 1.5 s.
    assert 2 <= down.calls <= 5
    assert time.monotonic() - t0 < 0.5 + 0.3
    assert down.stats.snapshot()["errors"] == {"BackendUnavailableError": 1}


@pytest.mark.parametrize("path", ["sync", "async"])
def test_the_first_try_counts_against_the_attempts_and_the_deadline(path, caplog):
    """The first try runs before tenacity is set up (its machinery cost ~20-45 us a call): it still
    counts as one of the attempts, and its time as part of the deadline."""
    calls: list[float] = []

    def down(first_takes_s: float = 0.0) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(first_takes_s)
        raise BackendUnavailableError(f"down {len(calls)}")

    def call(policy: RetryPolicy, first_takes_s: float = 0.0) -> None:
        if path == "sync":
            retry_call(lambda: down(first_takes_s), policy, who="g")
        else:
            async def adown() -> None:
                down(first_takes_s)

            asyncio.run(aretry_call(adown, policy, who="g"))

    with caplog.at_level("WARNING", logger="agent_embeddings.retry"), pytest.raises(BackendUnavailableError) as exc:
        call(RetryPolicy(attempts=3, initial_backoff_s=0.0))
    assert len(calls) == 3 and str(exc.value) == "down 3"  # three tries in all, the last error raised
    assert [r.getMessage().split(": ", 1)[1].split(";")[0] for r in caplog.records] == [
        "BackendUnavailableError (try 1 of 3)", "BackendUnavailableError (try 2 of 3)"]
    calls.clear()
    # 0.3 s in the first try, then a wait of 0.05-0.1 s: past the 0.32 s deadline, so no second try
    with pytest.raises(BackendUnavailableError):
        call(RetryPolicy(attempts=3, initial_backoff_s=0.1, deadline_s=0.32), first_takes_s=0.3)
    assert len(calls) == 1


def test_retry_from_the_spec_maps_onto_openai_and_grpc_mechanisms(monkeypatch):
    spec = {"subject_id": "r", "models": [
        {"llm_type": "embeddings", "name": "oa", "llm_block_id": "openai:bge",
         "llm_parameters": {"base_url": "http://127.0.0.1:9/v1", "timeout": 60.0,
                            "retry": {"attempts": 4, "deadline_s": 5.0}}},
        {"llm_type": "embeddings", "name": "remote", "llm_block_id": "aios:hf-minilm",
         "llm_parameters": {"grpc_url": "127.0.0.1:9", "retry": {"attempts": 3, "initial_backoff_s": 0.2,
                                                                  "max_backoff_s": 1.5, "deadline_s": 7.0}}},
        _hf_item("local", retry={"attempts": 2}),
    ]}
    manager = EmbeddingGeneratorManager.from_subject_spec(spec)
    oa, remote, local = manager.get("oa"), manager.get("remote"), manager.get("local")
    # The shared loop retries openai: (the client's own retries would restart the clock on every
    # try): 4 tries within 5 s in all, each request bounded by what is left of the 5 s.
    assert (oa.max_retries, oa.timeout, oa.retry.attempts, oa.retry.deadline_s) == (3, 60.0, 4, 5.0)
    assert oa._client.max_retries == 0
    assert remote.timeout_s == 7.0
    from agent_embeddings.protocol.target import channel_options

    options = dict(channel_options(retry=remote._retry_policy))
    policy = json.loads(options["grpc.service_config"])["methodConfig"][0]["retryPolicy"]
    assert policy == {"maxAttempts": 3, "initialBackoff": "0.200s", "maxBackoff": "1.500s", "backoffMultiplier": 2.0,
                      "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED", "RESOURCE_EXHAUSTED"]}
    assert local.retry.attempts == 2
    assert "retryPolicy" not in json.loads(service_config(max_attempts=1))["methodConfig"][0]


# -- fallback ------------------------------------------------------------------------------------
def test_incompatible_fallback_is_a_spec_error_unless_allowed():
    def spec(**params: object) -> dict:
        return {"subject_id": "f", "models": [
            _hf_item("primary", fallback="other", **params),
            {"llm_type": "embeddings", "name": "other", "llm_block_id": "hf:BAAI/bge-small-en-v1.5"},
        ]}

    with pytest.raises(SpecError) as info:
        EmbeddingGeneratorManager.from_subject_spec(spec())
    message = str(info.value)
    assert "models[0]" in message and "llm_parameters.fallback" in message and "not embedding-compatible" in message
    assert f"model {MINILM!r} vs 'BAAI/bge-small-en-v1.5'" in message and "allow_incompatible_fallback" in message
    manager = EmbeddingGeneratorManager.from_subject_spec(spec(allow_incompatible_fallback=True))
    assert manager.fallback_of("primary") == "other"

    mixed = {"subject_id": "f", "models": [
        _hf_item("a", fallback="b", dimensions=128), _hf_item("b", normalize=False)]}
    with pytest.raises(SpecError, match=r"dimensions 128 vs None.*normalize True vs False"):
        EmbeddingGeneratorManager.from_subject_spec(mixed)
    with pytest.raises(SpecError, match="unknown generator 'nope'"):
        EmbeddingGeneratorManager.from_subject_spec({"subject_id": "f", "models": [_hf_item("a", fallback="nope")]})
    remote_unknown = {"subject_id": "f", "models": [
        {"llm_type": "embeddings", "name": "remote", "llm_block_id": "aios:hf-minilm",
         "llm_parameters": {"grpc_url": "127.0.0.1:9", "fallback": "local"}}, _hf_item()]}
    with pytest.raises(SpecError, match=r"model 'hf-minilm' vs .*declaring llm_parameters.model_id"):
        EmbeddingGeneratorManager.from_subject_spec(remote_unknown)


def test_stalled_remote_falls_back_to_the_same_model_served_locally(runner, hf_manager, sentences):
    """A stalled server: the remote block times out and the local copy of its model answers."""
    servicer = StallingServicer()
    stub_server, address = start_stub(runner, servicer)
    spec = {"subject_id": "f", "models": [
        {"llm_type": "embeddings", "name": "remote", "llm_block_id": "aios:stall",
         "llm_parameters": {"grpc_url": address, "timeout_s": 0.5, "dims": 384, "model_id": MINILM,
                            "fallback": "local"}},
        _hf_item("local", dims=384),
    ]}
    manager = EmbeddingGeneratorManager.from_subject_spec(spec)
    try:
        result = manager.embed("remote", sentences)
        assert (result.generator, result.fallback_from) == ("local", "remote")
        assert np.abs(result.vectors - hf_manager.encode("hf", sentences)).max() <= TOL
        got = asyncio.run(manager.aembed("remote", sentences[:2]))
        assert got.generator == "local" and np.abs(got.vectors - hf_manager.encode("hf", sentences[:2])).max() <= TOL
        assert manager.generate("remote", sentences[0]) == pytest.approx(hf_manager.generate("hf", sentences[0]), abs=TOL)
        stats = manager.stats()
        assert stats["remote"]["fallbacks"] == 3 and stats["remote"]["errors"] == {"BackendTimeoutError": 3}
        assert stats["remote"]["fallback"] == "local" and stats["local"]["calls"] == 3
    finally:
        runner.run(stub_server.stop(0))
        manager.close()


# -- caches --------------------------------------------------------------------------------------
def test_memory_cache_sends_only_misses_and_keeps_order(hf_manager, sentences):
    gen = Flaky(hf_manager.get("hf"), failures=0, cache={"kind": "memory", "max_entries": 6})
    expected = hf_manager.encode("hf", sentences)
    first = gen.embed(sentences[:4])
    assert first.cache_hits == 0 and gen.texts_seen == sentences[:4]
    gen.texts_seen.clear()
    mixed = [sentences[5], sentences[1], sentences[5], sentences[3], sentences[6]]
    result = gen.embed(mixed)
    assert gen.texts_seen == [sentences[5], sentences[6]]  # misses only, each once
    assert result.cache_hits == 2
    assert np.abs(result.vectors - expected[[5, 1, 5, 3, 6]]).max() <= TOL
    stats = gen.cache.stats()
    assert (stats["hits"], stats["misses"], stats["size"]) == (2, 7, 6)  # bounded: LRU evicted one
    gen.texts_seen.clear()
    raw = gen.embed(sentences[:1], normalize=False)  # normalization is part of the key
    assert gen.texts_seen == sentences[:1] and raw.cache_hits == 0
    assert gen.stats.snapshot()["cache_hits"] == 2


def test_disk_cache_persists_and_survives_being_broken_mid_run(hf_manager, sentences, tmp_path, caplog):
    path = tmp_path / "cache" / "vectors.sqlite3"
    expected = hf_manager.encode("hf", sentences)
    gen = Flaky(hf_manager.get("hf"), failures=0, cache={"kind": "disk", "path": str(path)})
    assert np.abs(gen.encode(sentences) - expected).max() <= TOL
    gen.close()
    again = Flaky(hf_manager.get("hf"), failures=0, cache={"kind": "disk", "path": str(path)})
    result = again.embed(sentences)  # another instance (another process alike): all hits
    assert result.cache_hits == len(sentences) and again.texts_seen == []
    assert np.abs(result.vectors - expected).max() <= TOL

    caplog.set_level(logging.WARNING, logger="agent_embeddings")
    # unwritable mid-run: the connection turns read-only, writes fail
    again.cache._conn.execute("PRAGMA query_only=1")
    fresh = [f"{s} (new)" for s in sentences]
    assert np.abs(again.encode(fresh) - hf_manager.encode("hf", fresh)).max() <= TOL
    assert "cannot write" in caplog.text and again.cache.errors == 1
    # corrupt mid-run: garbage over the file; reads fail, the calls still compute
    again.cache._down_until = 0.0
    again.cache._conn = None
    path.write_bytes(b"this is not a database" * 500)
    for p in path.parent.glob("vectors.sqlite3-*"):
        p.unlink()
    assert np.abs(again.encode(sentences) - expected).max() <= TOL
    assert np.abs(asyncio.run(again.aencode(sentences)) - expected).max() <= TOL
    assert again.cache.errors >= 2
    # a path that can never be created (under a regular file): a warning, vectors computed
    blocker = tmp_path / "file"
    blocker.write_text("x")
    broken = Flaky(hf_manager.get("hf"), failures=0, cache={"kind": "disk", "path": str(blocker / "c.sqlite3")})
    assert np.abs(broken.encode(sentences[:2]) - expected[:2]).max() <= TOL
    assert "cannot open" in caplog.text


def test_cache_keys_separate_models_dims_and_normalization(hf_manager, monkeypatch, tmp_path):
    a = Flaky(hf_manager.get("hf"), failures=0)
    b = Flaky(hf_manager.get("hf"), failures=0, dimensions=128)
    c = Flaky(hf_manager.get("hf"), failures=0, model_id="other/model")
    spaces = {a.cache_namespace(), b.cache_namespace(), c.cache_namespace(), a.cache_namespace(normalize=False)}
    assert len(spaces) == 4
    cache = MemoryCache(4)
    cache.put_many([(str(i), np.full(2, i, np.float32)) for i in range(6)])
    assert cache.size() == 4 and cache.get_many(["0", "5"])[0] is None
    # no path: the file lives under $AGENT_EMBEDDINGS_CACHE_DIR, where another instance finds the vectors
    home = tmp_path / "cache-home"
    monkeypatch.setenv("AGENT_EMBEDDINGS_CACHE_DIR", str(home))
    stored = [(f"k{i}", np.full(3, i, np.float32)) for i in range(3)]
    writer = DiskCache(None, max_entries=3)
    writer.put_many(stored)
    writer.close()
    assert [p for p in home.rglob("*") if p.is_file()]  # stored in a file under that directory
    reader = DiskCache(None, max_entries=3)
    try:
        found = reader.get_many([key for key, _ in stored])
        assert all(got is not None and np.array_equal(got, vec) for got, (_, vec) in zip(found, stored))
    finally:
        reader.close()


# -- observability -------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.before: list[dict] = []
        self.after: list[dict] = []

    @hookimpl
    def before_embed(self, record):
        record.extra["seen"] = True
        self.before.append({"generator": record.generator, "batch_size": record.batch_size})

    @hookimpl
    def after_embed(self, record):
        self.after.append({k: getattr(record, k) for k in ("generator", "provider", "model", "batch_size", "dims",
                                                            "prompt_tokens", "cache_hits", "error_type")}
                          | {"latency": record.latency_s, "seen": record.extra.get("seen")})


def test_hook_before_embed(hf_manager, sentences):
    recorder = Recorder()
    register_plugin(recorder, name="recorder")
    try:
        hf_manager.encode("hf", sentences[:3])
    finally:
        unregister_plugin(recorder)
    assert recorder.before == [{"generator": "hf-minilm", "batch_size": 3}]


def test_hook_after_embed(hf_manager, sentences):
    recorder = Recorder()
    register_plugin(recorder, name="recorder")
    cached = Flaky(hf_manager.get("hf"), failures=0, cache=True, name="cached")
    failing = Flaky(hf_manager.get("hf"), failures=9, retry=RetryPolicy(attempts=1), name="failing")
    try:
        hf_manager.encode("hf", sentences[:3])
        cached.encode(sentences[:2])
        cached.encode(sentences[:3])
        with pytest.raises(BackendUnavailableError):
            failing.encode(["x"])
    finally:
        unregister_plugin(recorder)
    first, hit, miss, error = [r for r in recorder.after if r["generator"] != "hf-minilm" or r["batch_size"] == 3]
    assert first["generator"] == "hf-minilm" and first["provider"] == "hf" and first["model"] == MINILM
    assert (first["batch_size"], first["dims"], first["cache_hits"], first["error_type"]) == (3, 384, 0, None)
    assert first["prompt_tokens"] > 0 and first["latency"] > 0 and first["seen"] is True
    assert (hit["cache_hits"], miss["batch_size"], miss["cache_hits"]) == (0, 3, 2)
    assert error["error_type"] == "BackendUnavailableError" and error["dims"] is None


def test_a_broken_hook_never_fails_a_call(hf_manager, caplog):
    class Broken:
        @hookimpl
        def after_embed(self, record):
            raise RuntimeError("exporter down")

    plugin = Broken()
    register_plugin(plugin, name="broken")
    try:
        assert len(hf_manager.generate("hf", "still works")) == 384
    finally:
        unregister_plugin(plugin)
    assert "after_embed hook failed" in caplog.text


def test_manager_stats_and_prometheus_metrics(hf_manager, sentences, runner):
    spec = {"subject_id": "m", "models": [_hf_item("local", cache={"kind": "memory"})]}
    manager = EmbeddingGeneratorManager.from_subject_spec(spec)
    manager.warm_up()
    with serve_in_thread(manager) as server:
        client = httpx.Client(base_url=f"http://{server.address}")
        for _ in range(2):
            assert client.post("/v1/embeddings", json={"model": "local", "input": sentences[:4]}).status_code == 200
        assert client.post("/v1/embeddings", json={"model": "local", "input": [""]}).status_code == 400
        text = client.get("/metrics").text
    stats = manager.stats()["local"]
    assert stats["calls"] == 2 and stats["texts"] == 8 and stats["cache"]["hits"] == 4 and stats["in_flight"] == 0
    assert stats["latency_s"]["count"] == 2 and stats["batch_size"]["buckets"][2] == (4, 2)
    for line in (
        'agent_embeddings_requests_total{route="/v1/embeddings",server="http",status="200"} 2.0',
        'agent_embeddings_requests_total{route="/v1/embeddings",server="http",status="400"} 1.0',
        'agent_embeddings_generator_calls_total{generator="local",provider="hf"} 2.0',
        'agent_embeddings_cache_hits_total{generator="local",kind="memory"} 4.0',
        'agent_embeddings_requests_in_flight{server="http"} 1.0',  # the /metrics request itself
        'agent_embeddings_request_batch_size_count{server="http"} 2.0',
    ):
        assert line in text, line
    assert "agent_embeddings_generator_latency_seconds_bucket" in text
    # the gRPC server's metrics endpoint (--metrics-port)
    from agent_embeddings.protocol.convert import pb
    from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2_grpc as pb_grpc

    grpc_server = runner.grpc_server(manager, ServerConfig(metrics_port=0))
    try:
        import grpc

        with grpc.insecure_channel(grpc_server.address) as channel:
            stub = pb_grpc.EmbeddingServiceStub(channel)
            stub.Embed(pb.EmbedRequest(model="local", inputs=sentences[:3]), timeout=30)
            with pytest.raises(grpc.RpcError):
                stub.Embed(pb.EmbedRequest(model="nope", inputs=["x"]), timeout=30)
        text = httpx.get(f"http://{grpc_server.metrics_address}/metrics").text
        assert 'agent_embeddings_requests_total{route="Embed",server="grpc",status="OK"} 1.0' in text
        assert 'agent_embeddings_requests_total{route="Embed",server="grpc",status="NOT_FOUND"} 1.0' in text
        assert 'agent_embeddings_request_errors_total{server="grpc",type="model_not_found"} 1.0' in text
        assert 'agent_embeddings_generator_calls_total{generator="local",provider="hf"} 3.0' in text
    finally:
        runner.stop(grpc_server)
        manager.close()


# -- secrets -------------------------------------------------------------------------------------
class _EchoKey(BaseHTTPRequestHandler):
    """An endpoint that fails with 500 and echoes the Authorization header into its message."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"error": {"message": f"upstream rejected {self.headers.get('authorization')}"}}).encode()
        self.send_response(500)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_planted_key_never_appears_anywhere(hf_manager, monkeypatch, tmp_path, capsys, caplog):
    key = "sk-planted-" + "Zq7xY3kP9wL2mN8vB4cR6tH1"
    monkeypatch.setenv("PLANTED_KEY", key)
    caplog.set_level(logging.DEBUG)
    echo = ThreadingHTTPServer(("127.0.0.1", 0), _EchoKey)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    guarded = serve_in_thread(hf_manager, config=ServerConfig(api_keys=(SecretStr("the-right-key-123456"),)))
    server = guarded.__enter__()
    spec = {"subject_id": "s", "models": [
        {"llm_type": "embeddings", "name": "echo", "llm_block_id": "openai:bge",
         "llm_parameters": {"base_url": f"http://127.0.0.1:{echo.server_address[1]}/v1", "api_key_ref": "env:PLANTED_KEY",
                            "retry": {"attempts": 1}}},
        {"llm_type": "embeddings", "name": "guarded", "llm_block_id": "openai:hf",
         "llm_parameters": {"base_url": f"http://{server.address}/v1", "api_key_ref": "env:PLANTED_KEY",
                            "retry": {"attempts": 1}}},
    ]}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    seen: list[str] = []
    try:
        manager = EmbeddingGeneratorManager.from_subject_spec(spec_path)
        for name, error in (("echo", BackendUnavailableError), ("guarded", AuthenticationError)):
            with pytest.raises(error) as info:
                manager.encode(name, ["hello"])
            seen += [str(info.value), repr(info.value), str(info.value.__cause__), str(info.value.__context__)]
        logging.getLogger("agent_embeddings.test").warning("oops, the key is %s (Bearer %s)", key, key)
        seen += [repr(manager.get("echo")), str(manager.get("echo").describe()), str(manager.list_generators()),
                 json.dumps(manager.stats(), default=str)]
        with serve_in_thread(manager) as metrics_server:
            seen.append(httpx.get(f"http://{metrics_server.address}/metrics").text)
            seen.append(httpx.get(f"http://{metrics_server.address}/v1/models").text)
        from agent_embeddings.cli import main

        assert main(["backends"]) == 0 and main(["validate", str(spec_path)]) == 0
        captured = capsys.readouterr()
        seen += [captured.out, captured.err]
        seen += [r.getMessage() for r in caplog.records] + [caplog.text]
    finally:
        guarded.__exit__(None, None, None)
        echo.shutdown()
    everything = "\n".join(seen)
    assert "upstream rejected" in everything and "oops, the key is" in everything  # the texts are there...
    assert key not in everything and key[3:] not in everything  # ... without the key
    assert redact(f"Authorization: Bearer {key}") == "Authorization: Bearer **********"
    assert redact('{"api_key": "abcdef123456"}') == '{"api_key": "**********"}'


# -- concurrency ---------------------------------------------------------------------------------
def test_16_threads_and_16_tasks_get_exactly_the_sequential_vectors(hf_manager):
    from benchmarks.data import short_sentences

    texts = short_sentences(96, seed=5)
    calls = [texts[i : i + 1 + i % 3] for i in range(0, 96, 2)]
    sequential = [hf_manager.encode("hf", c) for c in calls]
    with ThreadPoolExecutor(16) as pool:
        threaded = list(pool.map(lambda c: hf_manager.encode("hf", c), calls))

    async def tasks() -> list[np.ndarray]:
        return await asyncio.gather(*(hf_manager.aencode("hf", c) for c in calls))

    for results in (threaded, asyncio.run(tasks())):
        for got, want in zip(results, sequential):
            assert got.shape == want.shape and np.abs(got - want).max() <= TOL


def test_overload_is_refused_fast_and_the_servers_stay_healthy(hf_manager, runner):
    """Beyond max_concurrency: 429 / RESOURCE_EXHAUSTED at once, health answers, then normal service."""
    slow = SlowGenerator(hf_manager.get("hf"), delay_s=30)  # admitted calls are held until released below
    manager = EmbeddingGeneratorManager()
    manager.register_generator("slow", slow)
    config = ServerConfig(max_concurrency=2)
    with serve_in_thread(manager, config=config) as server, ThreadPoolExecutor(8) as pool:
        url = f"http://{server.address}"

        def post() -> tuple[int, bool]:
            status = httpx.post(f"{url}/v1/embeddings", json={"model": "slow", "input": ["x"]}, timeout=30).status_code
            return status, slow.finished.is_set()  # whether a model call had ended when this answer came

        try:
            calls = [pool.submit(post) for _ in range(8)]
            # the two admitted calls stay in the model: the six others must be answered meanwhile
            wait_for(lambda: sum(c.done() for c in calls) >= 6)
            assert httpx.get(f"{url}/health").status_code == 200
        finally:
            slow.release.set()
        answers = [c.result() for c in calls]
        assert httpx.get(f"{url}/health").status_code == 200
    refused = [ended for s, ended in answers if s == 429]
    # refused while the admitted calls were still in the model: nothing queued behind them
    assert sorted({s for s, _ in answers}) == [200, 429] and refused and not any(refused)


class _Hammer:
    """Six threads, 40 single-sentence calls each, through one generator; ``kill`` runs mid-way."""

    def __init__(self, gen: AbstractEmbeddingGenerator, sentences: list[str]) -> None:
        self.gen, self.sentences = gen, sentences
        self.results: list[tuple[int, np.ndarray]] = []
        self.errors: list[BaseException] = []
        self.done_at_kill = 0

    def _client(self, offset: int) -> None:
        try:
            for i in range(40):
                k = (i + offset) % len(self.sentences)
                self.results.append((k, self.gen.encode([self.sentences[k]])))
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self.errors.append(exc)

    def run(self, kill) -> None:
        workers = [threading.Thread(target=self._client, args=(n,)) for n in range(6)]
        for w in workers:
            w.start()
        while len(self.results) < 30 and any(w.is_alive() for w in workers):
            time.sleep(0.005)
        self.done_at_kill = len(self.results)
        kill()
        for w in workers:
            w.join(120)

    def check(self, expected: np.ndarray) -> None:
        assert self.done_at_kill < 240, "the run ended before the kill: no fault was injected under load"
        assert not self.errors, self.errors[0]
        assert len(self.results) == 240
        for k, got in self.results:
            assert np.abs(got - expected[k]).max() <= TOL


def test_replica_stopped_under_load_loses_nothing(runner, hf_manager, sentences):
    """Two in-process replicas behind one aios: target; one is stopped with no grace under load.

    Its in-flight calls end CANCELLED before any answer; gRPC's retry policy resends them to the other.
    """
    from agent_embeddings.backends.aios import AIOSEmbeddings

    a, b = runner.grpc_server(hf_manager), runner.grpc_server(hf_manager)
    gen = AIOSEmbeddings(grpc_url=f"ipv4:{a.address},{b.address}", dims=384, timeout_s=20)
    try:
        hammer = _Hammer(gen, sentences)
        hammer.run(lambda: runner.stop(a, grace_s=0))
        hammer.check(hf_manager.encode("hf", sentences))
        assert a.embed_calls > 0 and b.embed_calls > 0  # both replicas served before one left
    finally:
        gen.close()
        runner.stop(b)


@pytest.mark.slow
def test_replica_process_killed_under_load_loses_nothing(default_spec, hf_manager, sentences):
    """Two `agent-embeddings serve --grpc` processes behind one aios: target; one gets SIGKILL mid-run.

    Calls in flight on the killed replica fail with UNAVAILABLE before any answer was sent, so
    gRPC's retry policy sends them to the other replica within the same deadline.
    """
    from agent_embeddings.backends.aios import AIOSEmbeddings
    from agent_embeddings.server.process import ServeProcess

    with ServeProcess(default_spec, grpc="127.0.0.1:0") as a, ServeProcess(default_spec, grpc="127.0.0.1:0") as b:
        gen = AIOSEmbeddings(grpc_url=f"ipv4:{a.addresses['grpc']},{b.addresses['grpc']}", dims=384, timeout_s=30)
        try:
            hammer = _Hammer(gen, sentences)
            hammer.run(a.kill)  # SIGKILL: no grace, connections reset
            hammer.check(hf_manager.encode("hf", sentences))
            assert a.returncode == -9  # it really was killed, not drained
        finally:
            gen.close()
