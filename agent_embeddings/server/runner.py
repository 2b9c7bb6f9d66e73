"""Run the gRPC and/or HTTP server in one asyncio loop, with graceful shutdown on SIGTERM.

Each server module provides a class following :class:`ServerHandle`; the runner starts them
(health says NOT_SERVING), loads the models, flips them to SERVING, and on SIGTERM/SIGINT
flips them back, stops accepting new calls and lets in-flight calls finish within the grace
period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from ..manager import EmbeddingGeneratorManager
from .config import ServerConfig
from .loops import LOOPS, loop_factory, run

__all__ = ["LOOPS", "ServerHandle", "loop_factory", "make_servers", "require_server_extra", "run", "run_servers"]

log = logging.getLogger("agent_embeddings.server")

class ServerHandle(Protocol):
    """What the runner needs of a server."""

    #: "grpc" or "http"
    kind: str

    @property
    def address(self) -> str:
        """The bound ``host:port`` (the real port when 0 was asked for); valid after start()."""

    async def start(self) -> None:
        """Bind and begin accepting calls; health reports NOT_SERVING until set_serving(True)."""

    def set_serving(self, serving: bool) -> None:
        """Switch the health status."""

    async def stop(self, grace_s: float) -> None:
        """Stop accepting calls, let in-flight calls finish within ``grace_s``, then close."""


# What each server imports; all of it comes with the 'server' extra.
_NEEDS = {
    "metrics": ("prometheus_client",),
    "grpc": ("grpc", "grpc_health.v1", "grpc_reflection.v1alpha", "google.protobuf"),
    "http": ("fastapi", "uvicorn", "orjson", "httptools"),  # httptools: the protocol .http_protocol extends
}


def require_server_extra(*, grpc: bool, http: bool) -> None:
    """Import what the servers asked for need, or raise a ConfigurationError naming the extra
    (``pip install 'agent-embeddings[server]'``) instead of a ModuleNotFoundError."""
    from .._deps import require

    kinds = ["metrics"] + ["grpc"] * grpc + ["http"] * http
    for module in (m for kind in kinds for m in _NEEDS[kind]):
        require(module, "server", who="serving")


def make_servers(
    manager: EmbeddingGeneratorManager,
    *,
    grpc: str | None = None,
    http: str | None = None,
    config: ServerConfig | None = None,
) -> list[ServerHandle]:
    """Build (not start) the servers asked for; imports grpc / fastapi only when needed."""
    require_server_extra(grpc=bool(grpc), http=bool(http))
    from .metrics import ServerMetrics

    config = config or ServerConfig()
    metrics = ServerMetrics(manager)  # one registry: each endpoint shows both servers' requests
    servers: list[ServerHandle] = []
    if grpc:
        from .grpc import GrpcServer

        servers.append(GrpcServer(manager, grpc, config, metrics=metrics))
    if http:
        from .http import HttpServer

        servers.append(HttpServer(manager, http, config, metrics=metrics))
    if not servers:
        raise ValueError("nothing to serve: give a gRPC and/or an HTTP address")
    return servers


async def run_servers(
    manager: EmbeddingGeneratorManager,
    servers: Sequence[ServerHandle],
    *,
    config: ServerConfig | None = None,
    on_ready: Callable[[Sequence[ServerHandle]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Start ``servers``, warm the models, serve until ``stop`` is set or SIGTERM/SIGINT arrives."""
    config = config or ServerConfig()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    started: list[ServerHandle] = []
    try:
        for server in servers:
            await server.start()
            started.append(server)
        await asyncio.to_thread(manager.warm_up)  # load models off the event loop
        for server in started:
            server.set_serving(True)
            log.info("serving %s on %s: %s", server.kind, server.address, _served(manager))
        if on_ready:
            on_ready(started)
        await stop.wait()
        log.info("shutting down: finishing in-flight calls (grace period %.1fs)", config.grace_period_s)
    finally:
        for server in started:
            server.set_serving(False)
        await asyncio.gather(*(s.stop(config.grace_period_s) for s in started), return_exceptions=True)
        for sig in installed:
            loop.remove_signal_handler(sig)


def _served(manager: EmbeddingGeneratorManager) -> str:
    """The start-up line's list: each name with its backend and, once loaded, its engine ("auto"
    resolved) and streams, so an operator sees what a spec picked on this host:
    ``hf-minilm (hf, onnx, 2 streams)``."""
    parts = []
    for name in manager.names():
        described = manager.get(name).describe()
        said = [str(described.get("provider")), *([str(described["backend"])] if described.get("backend") else [])]
        if described.get("streams", 1) > 1:
            said.append(f"{described['streams']} streams")
        parts.append(f"{name} ({', '.join(said)})")
    return ", ".join(parts)
