"""Helpers of the gRPC tests: real servers on 127.0.0.1 in a background event loop.

``ServerThread`` runs :class:`GrpcServer` (the real one) in its own thread and loop, so
sync clients in the test thread can call it (the ``runner`` fixture in conftest.py is one per
module). The stubs inject faults only: ``StallingServicer`` answers Info like a real server and
never answers Embed, to test deadlines; ``FailingFirstServicer`` fails the first calls with a
chosen status, to test retries. Fake generators live in ``fakes.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from agent_embeddings import AbstractEmbeddingGenerator, EmbeddingGeneratorManager
from agent_embeddings.protocol.convert import embed_response, pb
from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2_grpc as pb_grpc
from agent_embeddings.server.config import ServerConfig
from agent_embeddings.server.grpc import GrpcServer


class ServerThread:
    """An event loop in a thread that hosts servers; ``run(coro)`` runs a coroutine in it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def grpc_server(
        self, manager: EmbeddingGeneratorManager, config: ServerConfig | None = None, *, serving: bool = True
    ) -> GrpcServer:
        server = GrpcServer(manager, "127.0.0.1:0", config or ServerConfig())

        async def start() -> None:
            await server.start()
            if serving:
                server.set_serving(True)
                await asyncio.sleep(0)  # let the health update run

        self.run(start())
        return server

    def stop(self, server: Any, grace_s: float = 1.0) -> None:
        async def stop() -> None:
            server.set_serving(False)
            await server.stop(grace_s)

        self.run(stop())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _StubServicer(pb_grpc.EmbeddingServiceServicer):
    """Answers Info like a server of one 384-dims model named ``stall``; counts Embed calls."""

    def __init__(self) -> None:
        self.embed_calls = 0

    async def Info(self, request: pb.InfoRequest, context: Any) -> pb.InfoResponse:
        response = pb.InfoResponse(max_inputs_per_request=64, max_message_bytes=1 << 20)
        response.models.add(name="stall", dims=384)
        return response


class StallingServicer(_StubServicer):
    """Embed never answers (until cancelled)."""

    async def Embed(self, request: pb.EmbedRequest, context: Any) -> pb.EmbedResponse:
        self.embed_calls += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class FailingFirstServicer(_StubServicer):
    """Fails the first ``failures`` Embed calls with ``code``, then answers with ``gen``'s real vectors."""

    def __init__(self, gen: AbstractEmbeddingGenerator, code: grpc.StatusCode, failures: int = 1) -> None:
        super().__init__()
        self.gen, self.code, self.failures = gen, code, failures

    async def Embed(self, request: pb.EmbedRequest, context: Any) -> pb.EmbedResponse:
        self.embed_calls += 1
        if self.embed_calls <= self.failures:
            await context.abort(self.code, f"injected {self.code.name}")
        vectors = self.gen.encode(list(request.inputs))
        return embed_response(vectors, model="stall", normalized=True, prompt_tokens=None, request_id="",
                              total_us=0, inference_us=0)


def start_stub(runner: ServerThread, servicer: Any) -> tuple[Any, str]:
    """Serve ``servicer`` on an ephemeral loopback port; return (server, 'host:port')."""

    async def start() -> tuple[Any, int]:
        server = grpc.aio.server()
        pb_grpc.add_EmbeddingServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = runner.run(start())
    return server, f"127.0.0.1:{port}"


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``predicate()`` holds; ``timeout`` only guards against a hang (TimeoutError)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)
