"""The ``aios:`` client backend against real servers on 127.0.0.1 serving the real local model."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from pydantic import SecretStr

from agent_embeddings import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    DimensionMismatchError,
    EmbeddingGeneratorManager,
    RemoteNotFoundError,
    SpecError,
)
from agent_embeddings.backends.aios import AIOSEmbeddings
from agent_embeddings.server.config import ServerConfig

from ._grpc_support import FailingFirstServicer, ServerThread, StallingServicer, start_stub

TOL = 1e-5


@pytest.fixture(scope="module")
def server(runner: ServerThread, hf_manager: EmbeddingGeneratorManager) -> Iterator[object]:
    s = runner.grpc_server(hf_manager)
    yield s
    runner.stop(s)


def _spec(address: str, **params: object) -> dict:
    return {
        "subject_id": "remote",
        "models": [
            {
                "llm_type": "embeddings",
                "llm_block_id": "aios:hf-minilm",
                "llm_selection_query": {"tenant": "org-123", "tier": "prod", "weight": 2},
                "llm_parameters": {"grpc_url": address, "timeout_s": 20, "dims": 384, **params},
            }
        ],
    }


def test_spec_item_end_to_end_equals_in_process(server, hf_manager, sentences, caplog):
    caplog.set_level(logging.DEBUG, logger="agent_embeddings.server.grpc")
    with EmbeddingGeneratorManager.from_subject_spec(_spec(server.address)) as remote:
        gen = remote.get("aios")
        assert isinstance(gen, AIOSEmbeddings) and gen.model == "hf-minilm" and gen.plaintext
        local = hf_manager.encode("hf", sentences)
        assert np.abs(np.asarray(remote.generate("aios", sentences[0])) - local[0]).max() <= TOL
        assert np.abs(remote.encode("aios", sentences) - local).max() <= TOL
        assert np.abs(np.asarray(asyncio.run(remote.agenerate("aios", sentences[1]))) - local[1]).max() <= TOL
        assert np.abs(asyncio.run(remote.aencode("aios", sentences)) - local).max() <= TOL
        # per-call normalize override and token usage come through
        raw = hf_manager.encode("hf", sentences[:2], normalize=False)
        assert np.abs(remote.encode("aios", sentences[:2], normalize=False) - raw).max() <= TOL
        assert remote.embed("aios", sentences[:2]).prompt_tokens == hf_manager.embed("hf", sentences[:2]).prompt_tokens
        channel = gen._channel
        remote.encode("aios", ["again"])
        assert gen._channel is channel  # one channel, reused
    assert gen._channel is None  # closed with the manager
    assert "'tenant': 'org-123'" in caplog.text and "'weight': '2'" in caplog.text  # selection reached the server


def test_direct_construction_uses_the_only_served_model(server, hf_manager, sentences):
    with AIOSEmbeddings(grpc_url=server.address, dims=384, timeout_s=15, normalize=True) as gen:
        assert np.abs(np.asarray(gen.generate(sentences[2])) - hf_manager.encode("hf", sentences[2:3])[0]).max() <= TOL
        assert gen.describe()["model"] == "hf-minilm" and gen.output_dims == 384


def test_several_served_models_need_a_name(runner, hf_manager):
    manager = EmbeddingGeneratorManager()
    manager.register_generator("alpha", hf_manager.get("hf"))
    manager.register_generator("beta", hf_manager.get("hf"))
    s = runner.grpc_server(manager)
    try:
        with pytest.raises(ConfigurationError, match=r"serves 2 models \(alpha, beta\)"):
            AIOSEmbeddings(grpc_url=s.address).encode(["x"])
        assert AIOSEmbeddings(grpc_url=s.address, model="beta").encode(["x"]).shape == (1, 384)
    finally:
        runner.stop(s)


def test_unknown_block_and_dims_mismatch(server):
    with pytest.raises(RemoteNotFoundError, match=r"does not serve 'nope'; served: hf-minilm"):
        AIOSEmbeddings(grpc_url=server.address, model="nope").warm_up()
    with pytest.raises(DimensionMismatchError, match=r"declared dims=768 .* serves 384-dimensional") as excinfo:
        AIOSEmbeddings(grpc_url=server.address, dims=768).encode(["x"])
    assert server.address in str(excinfo.value)
    with pytest.raises(DimensionMismatchError):
        asyncio.run(AIOSEmbeddings(grpc_url=server.address, dims=768).aencode(["x"]))


def test_large_batch_is_split_by_server_limits_and_kept_in_order(runner, hf_manager, sentences):
    # 3 inputs per request, and 8 KiB messages: at most 4 rows of 384 float32 per response
    s = runner.grpc_server(hf_manager, ServerConfig(max_inputs=3, max_request_bytes=8 * 1024))
    texts = [f"{t} #{i}" for i, t in enumerate(sentences * 3)]  # 24 distinct texts
    try:
        gen = AIOSEmbeddings(grpc_url=s.address, batch_size=100, max_concurrent_requests=3)
        vectors = gen.encode(texts)
        assert s.embed_calls == 8
        assert np.abs(vectors - hf_manager.encode("hf", texts)).max() <= TOL
        assert np.abs(asyncio.run(gen.aencode(texts)) - vectors).max() <= TOL
        assert s.embed_calls == 16
        gen.close()
        # the byte limit alone splits too
        s2 = runner.grpc_server(hf_manager, ServerConfig(max_request_bytes=4 * 1024))
        gen2 = AIOSEmbeddings(grpc_url=s2.address)
        assert np.abs(gen2.encode(texts[:5]) - hf_manager.encode("hf", texts[:5])).max() <= TOL
        assert s2.embed_calls == 3  # 2 rows of 1536 bytes fit in 4 KiB with the overhead
        gen2.close()
        runner.stop(s2)
    finally:
        runner.stop(s)


def test_two_replicas_share_the_load_and_losing_one_loses_no_call(runner, hf_manager, sentences):
    a, b = runner.grpc_server(hf_manager), runner.grpc_server(hf_manager)
    target = f"ipv4:{a.address},{b.address}"
    gen = AIOSEmbeddings(grpc_url=target, dims=384, timeout_s=20)
    expected = hf_manager.encode("hf", sentences)
    try:
        for i in range(16):
            assert np.abs(gen.encode([sentences[i % 8]]) - expected[i % 8]).max() <= TOL
        assert a.embed_calls > 0 and b.embed_calls > 0  # round robin across replicas

        results: list[np.ndarray] = []
        errors: list[BaseException] = []

        def client() -> None:
            try:
                for i in range(60):
                    results.append(gen.encode([sentences[i % 8]]))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        worker = threading.Thread(target=client)
        worker.start()
        while len(results) < 10 and worker.is_alive():
            time.sleep(0.005)
        runner.stop(a, grace_s=5)  # one replica leaves mid-run
        worker.join(60)
        assert not errors and len(results) == 60
        for i, got in enumerate(results):
            assert np.abs(got - expected[i % 8]).max() <= TOL
        before = b.embed_calls
        gen.encode(["after"])
        assert b.embed_calls == before + 1
    finally:
        gen.close()
        runner.stop(b)


def test_stalled_server_times_out_within_the_deadline(runner):
    servicer = StallingServicer()
    stub_server, address = start_stub(runner, servicer)
    try:
        gen = AIOSEmbeddings(grpc_url=address, timeout_s=1.0)
        # The 1 s deadline is the behaviour: 0.75 s of slack for channel set-up, thread hand-offs and
        # error translation on a busy box; a call that waited on (or retried) the stall would take far longer.
        t0 = time.monotonic()
        with pytest.raises(BackendTimeoutError) as excinfo:
            gen.encode(["x"])
        assert time.monotonic() - t0 < 1.0 + 0.75
        message = str(excinfo.value)
        assert "DEADLINE_EXCEEDED" in message and address in message and "deadline 1s" in message
        t0 = time.monotonic()
        with pytest.raises(BackendTimeoutError):
            asyncio.run(gen.aencode(["x"]))
        assert time.monotonic() - t0 < 1.0 + 0.75
        assert servicer.embed_calls == 2  # a deadline is not retried
    finally:
        runner.run(stub_server.stop(0))


@pytest.mark.parametrize(
    ("code", "retried"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),  # a replica gone
        (grpc.StatusCode.CANCELLED, True),  # a replica whose shutdown grace ran out
        (grpc.StatusCode.INTERNAL, False),  # a real failure: not hidden by a retry
    ],
)
def test_a_replica_going_away_is_retried_and_nothing_else(runner, hf_manager, sentences, code, retried):
    servicer = FailingFirstServicer(hf_manager.get("hf"), code)
    stub_server, address = start_stub(runner, servicer)
    gen = AIOSEmbeddings(grpc_url=address, dims=384, timeout_s=10)
    try:
        if retried:
            assert np.abs(gen.encode(sentences[:2]) - hf_manager.encode("hf", sentences[:2])).max() <= TOL
            assert servicer.embed_calls == 2
        else:
            with pytest.raises(BackendError, match=code.name):
                gen.encode(sentences[:2])
            assert servicer.embed_calls == 1
    finally:
        gen.close()
        runner.run(stub_server.stop(0))


def test_server_down_at_start_fails_fast_naming_the_target(runner):
    # a port that was just free: nothing listens there
    stub_server, address = start_stub(runner, StallingServicer())
    runner.run(stub_server.stop(0))
    target = f"ipv4:{address}"
    for call in (lambda g: g.encode(["x"]), lambda g: asyncio.run(g.aencode(["x"]))):
        gen = AIOSEmbeddings(grpc_url=target, timeout_s=10)
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="UNAVAILABLE") as excinfo:
            call(gen)
        # Fails fast, not at the 10 s deadline: refused connections end in milliseconds; the 5 s
        # bound is slack for gRPC's reconnect back-off and a busy box, and still half the deadline.
        assert time.monotonic() - t0 < 5
        assert target in str(excinfo.value) and excinfo.value.retryable
        gen.close()


def test_bearer_token_from_api_key_ref(runner, hf_manager, monkeypatch):
    s = runner.grpc_server(hf_manager, ServerConfig(api_keys=(SecretStr("tok-123456"),)))
    try:
        monkeypatch.setenv("AIOS_TEST_TOKEN", "tok-123456")
        with AIOSEmbeddings(grpc_url=s.address, api_key_ref="env:AIOS_TEST_TOKEN") as gen:
            assert gen.encode(["x"]).shape == (1, 384)
            assert "tok-123456" not in repr(gen) and "tok-123456" not in str(gen.describe())
        monkeypatch.setenv("AIOS_TEST_TOKEN", "wrong-token")
        with pytest.raises(AuthenticationError, match="UNAUTHENTICATED") as excinfo:
            AIOSEmbeddings(grpc_url=s.address, api_key_ref="env:AIOS_TEST_TOKEN").encode(["x"])
        assert "wrong-token" not in str(excinfo.value)
        with pytest.raises(AuthenticationError, match="missing bearer token"):
            AIOSEmbeddings(grpc_url=s.address).encode(["x"])
    finally:
        runner.stop(s)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_with_a_given_ca(runner, hf_manager, tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    s = runner.grpc_server(hf_manager, ServerConfig(tls_cert=cert, tls_key=key))
    try:
        with AIOSEmbeddings(grpc_url=s.address, tls_ca_file=str(cert), tls_server_name="localhost") as gen:
            assert not gen.plaintext and gen.encode(["secure"]).shape == (1, 384)
        with pytest.raises(BackendUnavailableError):  # plain text cannot talk to a TLS port
            AIOSEmbeddings(grpc_url=s.address, timeout_s=3).encode(["x"])
    finally:
        runner.stop(s)


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("127.0.0.1:9000", True),
        ("localhost:9000", True),
        ("ipv4:127.0.0.1:1,127.0.0.2:2", True),
        ("unix:/tmp/aios.sock", True),
        ("dns:///embeddings.aio.svc.cluster.local:9000", False),
        ("ipv4:10.0.0.1:9000,127.0.0.1:9000", False),
        ("embeddings.example.com:443", False),
    ],
)
def test_plaintext_only_on_loopback_unless_asked(url, local):
    assert AIOSEmbeddings(grpc_url=url).plaintext is local
    assert AIOSEmbeddings(grpc_url=url, plaintext=True).plaintext is True
    assert AIOSEmbeddings(grpc_url=url, plaintext=False).plaintext is False


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"grpc_url": "http://host:9000"}, "http:// is not a gRPC target"),
        ({"grpc_url": "host"}, "expected HOST:PORT"),
        ({"grpc_url": "ipv4:db.local:9000"}, "not an IP address"),
        ({"grpc_url": "h:1", "plaintext": True, "tls_ca_file": "/x"}, "contradicts"),
        ({"grpc_url": "h:1", "tls_client_cert_file": "/x"}, "both tls_client_cert_file"),
    ],
)
def test_bad_settings_are_clear_errors(params, needle):
    item = {"llm_type": "embeddings", "llm_block_id": "aios:b", "llm_parameters": params}
    with pytest.raises(ConfigurationError, match=needle):
        EmbeddingGeneratorManager.from_subject_spec({"subject_id": "x", "models": [item]})


def test_params_are_validated_strictly():
    item = {"llm_type": "embeddings", "llm_block_id": "aios:b", "llm_parameters": {"grpc_url": "h:1", "timeout": 5}}
    with pytest.raises(SpecError, match=r"timeout: unknown field.*accepted keys for 'aios:'.*timeout_s"):
        EmbeddingGeneratorManager.from_subject_spec({"subject_id": "x", "models": [item]})
    item["llm_parameters"] = {"timeout_s": 5}
    with pytest.raises(SpecError, match="grpc_url: required field is missing"):
        EmbeddingGeneratorManager.from_subject_spec({"subject_id": "x", "models": [item]})
