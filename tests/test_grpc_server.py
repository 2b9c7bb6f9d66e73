"""The AIOS gRPC server: real servers on 127.0.0.1 (ephemeral ports) serving the real local model."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from pydantic import SecretStr

from agent_embeddings import EmbeddingGeneratorManager
from agent_embeddings.protocol import SERVICE_NAME
from agent_embeddings.protocol.convert import from_float32_bytes, pb
from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2_grpc as pb_grpc
from agent_embeddings.server.config import ServerConfig
from agent_embeddings.server.process import ServeProcess
from agent_embeddings.vectors import l2_normalize

from ._grpc_support import ServerThread, wait_for
from ._metrics_support import access_lines, by, samples
from .fakes import SlowGenerator


@pytest.fixture(scope="module")
def served(runner: ServerThread, hf_manager: EmbeddingGeneratorManager) -> Iterator[str]:
    server = runner.grpc_server(hf_manager, ServerConfig(max_inputs=8))
    yield server.address
    runner.stop(server)


@pytest.fixture(scope="module")
def stub(served: str) -> Iterator[pb_grpc.EmbeddingServiceStub]:
    with grpc.insecure_channel(served) as channel:
        yield pb_grpc.EmbeddingServiceStub(channel)


def _code(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return excinfo.value.code()


def test_embed_returns_the_models_vectors(stub, hf_manager, sentences):
    response = stub.Embed(pb.EmbedRequest(model="hf-minilm", inputs=sentences[:3]), timeout=30)
    vectors = from_float32_bytes(response.vectors, response.rows, response.cols)
    assert (response.rows, response.cols, response.model, response.normalized) == (3, 384, "hf-minilm", True)
    assert np.abs(vectors - hf_manager.encode("hf", sentences[:3])).max() <= 1e-5
    assert response.usage.prompt_tokens > 3 and response.timing.total_us >= response.timing.inference_us > 0
    assert len(response.request_id) == 32  # assigned by the server when the caller sent none


def test_aliases_normalize_and_dimensions(stub, hf_manager, sentences):
    raw = hf_manager.encode("hf", sentences[:2], normalize=False)
    response = stub.Embed(pb.EmbedRequest(model="hf", inputs=sentences[:2], normalize=False, request_id="r1"))
    assert response.model == "hf-minilm" and response.request_id == "r1" and not response.normalized
    assert np.abs(from_float32_bytes(response.vectors, 2, 384) - raw).max() <= 1e-5
    # Matryoshka: shorten first, then normalize
    response = stub.Embed(pb.EmbedRequest(model="hf-minilm", inputs=sentences[:2], dimensions=64))
    short = from_float32_bytes(response.vectors, response.rows, response.cols)
    assert short.shape == (2, 64)
    assert np.abs(short - l2_normalize(raw[:, :64])).max() <= 1e-5


def test_info_reports_models_and_limits(stub):
    info = stub.Info(pb.InfoRequest(), timeout=10)
    assert [(m.name, m.dims, m.provider, m.normalize) for m in info.models] == [("hf-minilm", 384, "hf", True)]
    assert "hf" in info.models[0].aliases
    assert info.max_inputs_per_request == 8 and info.max_message_bytes == ServerConfig().max_request_bytes
    assert info.server_version.startswith("agent-embeddings ")
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.Info(pb.InfoRequest(model="nope"))
    assert _code(excinfo) == grpc.StatusCode.NOT_FOUND


def test_unknown_model_is_not_found_and_lists_served_names(stub):
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.Embed(pb.EmbedRequest(model="gpt-embed", inputs=["x"]), timeout=10)
    assert _code(excinfo) == grpc.StatusCode.NOT_FOUND
    assert "'gpt-embed'" in excinfo.value.details() and "hf-minilm" in excinfo.value.details()


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (pb.EmbedRequest(model="hf", inputs=[]), "inputs is empty"),
        (pb.EmbedRequest(model="hf", inputs=["ok", ""]), "inputs[1] is an empty string"),
        (pb.EmbedRequest(model="hf", inputs=["x"] * 9), "at most 8"),
        (pb.EmbedRequest(model="hf", inputs=["x"], dimensions=1000), "dimensions=1000"),
        (pb.EmbedRequest(model="hf", inputs=["x"], truncation=pb.TRUNCATION_NONE), "TRUNCATION_NONE"),
    ],
)
def test_bad_input_is_invalid_argument(stub, request_, needle):
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.Embed(request_, timeout=10)
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in excinfo.value.details()


def test_message_over_the_size_limit_is_refused(runner, hf_manager):
    server = runner.grpc_server(hf_manager, ServerConfig(max_request_bytes=2048))
    try:
        with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as excinfo:
            pb_grpc.EmbeddingServiceStub(channel).Embed(pb.EmbedRequest(model="hf", inputs=["x" * 4096]))
        assert _code(excinfo) == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        runner.stop(server)


def test_health_and_reflection(runner, hf_manager):
    server = runner.grpc_server(hf_manager, serving=False)
    try:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE_NAME):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
                assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            runner.run(_flip(server, True))
            for service in ("", SERVICE_NAME):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
                assert status == health_pb2.HealthCheckResponse.SERVING
            db = ProtoReflectionDescriptorDatabase(channel)
            assert SERVICE_NAME in db.get_services() and "grpc.health.v1.Health" in db.get_services()
            method = db.FindFileContainingSymbol(SERVICE_NAME)
            assert method.name == "aios/embeddings/v1/embeddings.proto"
    finally:
        runner.stop(server)


async def _flip(server, serving: bool) -> None:
    server.set_serving(serving)
    await __import__("asyncio").sleep(0.01)


def test_bearer_token_is_required_when_configured(runner, hf_manager):
    server = runner.grpc_server(hf_manager, ServerConfig(api_keys=(SecretStr("s3cret-token"),)))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.EmbeddingServiceStub(channel)
            request = pb.EmbedRequest(model="hf", inputs=["x"])
            for metadata, details in [((), "missing bearer token"), ((("authorization", "Bearer nope"),), "invalid")]:
                with pytest.raises(grpc.RpcError) as excinfo:
                    stub.Embed(request, metadata=metadata, timeout=10)
                assert _code(excinfo) == grpc.StatusCode.UNAUTHENTICATED and details in excinfo.value.details()
            assert stub.Embed(request, metadata=(("authorization", "Bearer s3cret-token"),), timeout=10).rows == 1
            # health stays open for probes
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        runner.stop(server)


def test_busy_server_refuses_at_once_and_health_stays_responsive(runner, hf_manager):
    slow = SlowGenerator(hf_manager.get("hf"), delay_s=30)  # the first call is held until released below
    manager = EmbeddingGeneratorManager()
    manager.register_generator("slow", slow)
    server = runner.grpc_server(manager, ServerConfig(max_concurrency=1))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.EmbeddingServiceStub(channel)
            first = stub.Embed.future(pb.EmbedRequest(model="slow", inputs=["one"]), timeout=30)
            assert slow.started.wait(10)
            with pytest.raises(grpc.RpcError) as excinfo:
                stub.Embed(pb.EmbedRequest(model="slow", inputs=["two"]), timeout=30)
            assert _code(excinfo) == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_concurrency=1" in excinfo.value.details()
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            # neither waited for the model call: both were answered while it is still held
            assert not slow.finished.is_set() and not first.done()
            slow.release.set()
            assert first.result().rows == 1
    finally:
        slow.release.set()
        runner.stop(server)


def test_graceful_stop_finishes_the_in_flight_call(runner, hf_manager):
    slow = SlowGenerator(hf_manager.get("hf"), delay_s=1.0)
    manager = EmbeddingGeneratorManager()
    manager.register_generator("slow", slow)
    server = runner.grpc_server(manager)
    address = server.address
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        call = stub.Embed.future(pb.EmbedRequest(model="slow", inputs=["in flight"]), timeout=30)
        assert slow.started.wait(10)
        stopping = threading.Thread(target=runner.stop, args=(server, 10.0))
        stopping.start()
        wait_for(lambda: server._health._gracefully_shutting_down)
        response = call.result()  # finishes although the server is stopping
        stopping.join(15)
        assert not stopping.is_alive()
    expected = hf_manager.encode("hf", ["in flight"], normalize=True)
    assert np.abs(from_float32_bytes(response.vectors, 1, 384) - expected).max() <= 1e-5
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as excinfo:
        pb_grpc.EmbeddingServiceStub(channel).Embed(pb.EmbedRequest(model="slow", inputs=["late"]), timeout=5)
    assert _code(excinfo) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.slow
def test_cli_serve_grpc_answers_and_exits_0_on_sigterm(default_spec: Path, hf_manager, sentences):
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with ServeProcess(default_spec, grpc="127.0.0.1:0", env=env) as served:
        address = served.addresses["grpc"]
        from agent_embeddings.backends.aios import AIOSEmbeddings

        with AIOSEmbeddings(grpc_url=address, dims=384, timeout_s=30) as gen:
            vectors = gen.encode(sentences[:2])
        assert np.abs(vectors - hf_manager.encode("hf", sentences[:2])).max() <= 1e-5
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        assert served.terminate(timeout_s=30) == 0, served.output


# -- issue 19 ----------------------------------------------------------------------------------
def test_finding_04_an_upstream_failure_reaches_the_caller_as_a_status_and_a_request_id_only(
    runner, hf_manager, caplog
):
    """An ``openai:`` generator behind this server, whose upstream (a real server of ours behind a
    front that injects the fault) answers 401 naming an internal host: the gRPC caller sees neither
    the URL nor the upstream's words, only a generic message with the request id; the server's log
    has the details next to that id."""
    from agent_embeddings.backends.openai import OpenAIEmbeddingGenerator
    from agent_embeddings.server.http import serve_in_thread

    from ._faulty_front import faulty_front

    leak = "Internal host db-7.corp.internal:5432 rejected it"
    with serve_in_thread(hf_manager) as upstream, faulty_front(
        f"http://{upstream.address}", [(401, {})], message=leak
    ) as (front, base_url):
        manager = EmbeddingGeneratorManager()
        manager.register_generator("remote", OpenAIEmbeddingGenerator(model="hf-minilm", base_url=base_url))
        server = runner.grpc_server(manager)
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.EmbeddingServiceStub(channel)
                with caplog.at_level("INFO", logger="agent_embeddings"), pytest.raises(grpc.RpcError) as excinfo:
                    stub.Embed(pb.EmbedRequest(model="remote", inputs=["hello"], request_id="req-finding-4"), timeout=30)
                # the next call goes through: the server keeps serving, and the front forwarded it
                assert stub.Embed(pb.EmbedRequest(model="remote", inputs=["hello"]), timeout=30).rows == 1
        finally:
            runner.stop(server)
            manager.close()
    assert front.injected == [401]
    details = excinfo.value.details()
    assert _code(excinfo) == grpc.StatusCode.INTERNAL  # the server's own credentials: not the caller's to fix
    for secret in ("db-7", "corp.internal", "rejected", base_url.split("//")[1], "127.0.0.1", "401"):
        assert secret not in details, (secret, details)
    assert "request id req-finding-4" in details and "'remote'" in details
    logged = [r.getMessage() for r in caplog.records if r.name == "agent_embeddings.server.grpc"]
    assert any("req-finding-4" in line and "db-7.corp.internal:5432" in line for line in logged), logged


def test_finding_04_a_backend_outage_is_unavailable_without_its_text_and_aios_clients_retry_it(runner, hf_manager):
    """Statuses stay what the ``aios:`` client acts on: UNAVAILABLE is retried by its channel."""
    from agent_embeddings.backends.aios import AIOSEmbeddings
    from agent_embeddings.retry import RetryPolicy

    from .fakes import Flaky

    once = Flaky(hf_manager.get("hf"), failures=1, retry=RetryPolicy(attempts=1))  # the server itself does not retry
    always = Flaky(hf_manager.get("hf"), failures=10**6, retry=RetryPolicy(attempts=1))
    manager = EmbeddingGeneratorManager()
    manager.register_generator("once", once)
    manager.register_generator("always", always)
    server = runner.grpc_server(manager)
    try:
        with AIOSEmbeddings(grpc_url=server.address, model="once", timeout_s=30) as gen:
            vectors = gen.encode(["retried"])
        assert once.calls == 2  # the first answer was UNAVAILABLE; the client's channel sent it again
        assert np.abs(vectors - hf_manager.encode("hf", ["retried"])).max() <= 1e-5
        from agent_embeddings.errors import BackendUnavailableError

        with AIOSEmbeddings(grpc_url=server.address, model="always", timeout_s=30) as gen, pytest.raises(
            BackendUnavailableError
        ) as excinfo:
            gen.encode(["down"])
        assert always.calls > 1  # retried, then given up
        assert "flaky backend" not in str(excinfo.value) and "request id " in str(excinfo.value)
    finally:
        runner.stop(server)


def test_finding_15_max_request_bytes_bounds_requests_not_answers(runner, hf_manager, sentences):
    """A 1 KiB limit: a request of ~200 bytes whose answer is 8 x 384 floats (12 KiB) is answered
    (it once failed after the model had run: "Sent message larger than max"); a request over the
    limit is still refused, and Info announces the limit."""
    server = runner.grpc_server(hf_manager, ServerConfig(max_request_bytes=1024))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.EmbeddingServiceStub(channel)
            request = pb.EmbedRequest(model="hf", inputs=sentences)
            assert request.ByteSize() < 1024
            response = stub.Embed(request, timeout=30)
            assert response.ByteSize() > 8 * 384 * 4 > 1024
            vectors = from_float32_bytes(response.vectors, response.rows, response.cols)
            assert np.abs(vectors - hf_manager.encode("hf", sentences)).max() <= 1e-5
            with pytest.raises(grpc.RpcError) as excinfo:
                stub.Embed(pb.EmbedRequest(model="hf", inputs=["x" * 2048]), timeout=30)
            assert _code(excinfo) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert stub.Info(pb.InfoRequest(), timeout=10).max_message_bytes == 1024
    finally:
        runner.stop(server)


def test_finding_16_grpc_counts_a_passed_deadline_as_such_and_logs_every_call(runner, hf_manager, caplog):
    """A call whose deadline passes was counted CANCELLED; a cancelled one must stay CANCELLED. Every
    call, failed ones too, has one access-log line; errors add up to the calls that failed."""
    slow = SlowGenerator(hf_manager.get("hf"), delay_s=30)  # held until released below
    manager = EmbeddingGeneratorManager()
    manager.register_generator("slow", slow)
    server = runner.grpc_server(manager)
    try:
        with caplog.at_level(logging.INFO, logger="agent_embeddings.access"), grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.EmbeddingServiceStub(channel)
            with pytest.raises(grpc.RpcError) as late:
                stub.Embed(pb.EmbedRequest(model="slow", inputs=["late", "text two"]), timeout=0.5)
            assert _code(late) == grpc.StatusCode.DEADLINE_EXCEEDED
            wait_for(lambda: server.active_calls == 0)  # the server has given that call up
            call = stub.Embed.future(pb.EmbedRequest(model="slow", inputs=["left"]), timeout=30)
            wait_for(lambda: server.active_calls == 1)  # the server holds it: cancel it now
            call.cancel()
            with pytest.raises(grpc.RpcError) as unknown:
                stub.Embed(pb.EmbedRequest(model="nope", inputs=["x"]), timeout=10)
            assert _code(unknown) == grpc.StatusCode.NOT_FOUND
            assert stub.Info(pb.InfoRequest(), timeout=10).models[0].name == "slow"

            def embeds_counted() -> float:  # the server counts a call it gives up when it notices
                found = samples(server.metrics.render().decode(), "agent_embeddings_requests_total", route="Embed")
                return sum(found.values())

            wait_for(lambda: embeds_counted() >= 3)
    finally:
        slow.release.set()
        runner.stop(server)
    text = server.metrics.render().decode()
    calls = samples(text, "agent_embeddings_requests_total", server="grpc")
    assert {f"{dict(k)['route']} {dict(k)['status']}": v for k, v in calls.items()} == {
        "Embed DEADLINE_EXCEEDED": 1, "Embed CANCELLED": 1, "Embed NOT_FOUND": 1, "Info OK": 1,
    }
    errors = by("type", samples(text, "agent_embeddings_request_errors_total", server="grpc"))
    assert errors == {"deadline_exceeded": 1, "cancelled": 1, "model_not_found": 1}
    lines = access_lines(caplog.records)
    pattern = r"grpc (Embed|Info) [A-Z_]+ texts=(\d+|-) \d+\.\dms( error=\w+)?"
    assert len(lines) == 4 and all(re.fullmatch(pattern, line) for line in lines), lines
    assert lines[0].startswith("grpc Embed DEADLINE_EXCEEDED texts=2 ") and lines[0].endswith("error=deadline_exceeded")
    assert "late" not in " ".join(lines) and "text two" not in " ".join(lines)
