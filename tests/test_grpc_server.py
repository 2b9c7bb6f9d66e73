"""The AIOS gRPC server: real servers on 127.0.0.1 (ephemeral ports) serving the real local model."""

from __future__ import annotations

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
