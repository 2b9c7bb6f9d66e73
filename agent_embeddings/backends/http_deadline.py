"""A deadline for a whole HTTP request on the blocking client of the official ``openai`` package.

httpx's timeouts bound each socket operation, not a request: a server that sends one byte a
second never trips a 3 s read timeout, and a call meant to end in 5 s runs for minutes (httpx
issue "low-and-slow attack on client", open). An async request is bounded from outside
(``asyncio.timeout`` around it, see ``openai.py``); a blocking one cannot be interrupted from
another thread, so the bound goes where the time is spent: the connection pools of the sync
client get a network backend (httpcore's own extension point for socket I/O) whose connects,
reads and writes never wait past the deadline of the request in progress — a context variable
set around the request by :func:`request_deadline`. Without one, socket operations keep their
own timeouts, unchanged.

The pools are reached through httpx's private attributes (``Client._transport``/``_mounts``,
``HTTPTransport._pool``, ``ConnectionPool._network_backend``), the same in httpx/httpcore (openai
< 3) and httpx2/httpcore2 (openai 3): passing a ``transport=`` instead would switch off the
proxies httpx takes from the environment. If they ever move, the client works as before and a
warning says that the deadline is per socket operation only.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["keep_request_deadline", "request_deadline"]

log = logging.getLogger(__name__)

# Monotonic time by which the request in progress (in this thread) must be over.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("agent_embeddings_http_deadline", default=None)


@contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Socket operations of the deadline-aware clients end within ``seconds`` from now, together."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` cut to what is left of the deadline; ``expired`` when nothing is."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _Stream:
    """A network stream whose operations share the request's deadline."""

    def __init__(self, inner: Any, core: Any) -> None:
        self._inner, self._core = inner, core

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = self._inner.read(max_bytes, _left(timeout, self._core.ReadTimeout))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, self._core.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        inner = self._inner.start_tls(ssl_context, server_hostname, _left(timeout, self._core.ConnectTimeout))
        return _Stream(inner, self._core)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend:
    """httpcore's sync network backend, with streams that keep the request's deadline."""

    def __init__(self, inner: Any, core: Any) -> None:
        self._inner, self._core = inner, core

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kwargs: Any) -> _Stream:
        stream = self._inner.connect_tcp(host, port, _left(timeout, self._core.ConnectTimeout), **kwargs)
        return _Stream(stream, self._core)

    def connect_unix_socket(self, path: str, timeout: float | None = None, **kwargs: Any) -> _Stream:
        stream = self._inner.connect_unix_socket(path, _left(timeout, self._core.ConnectTimeout), **kwargs)
        return _Stream(stream, self._core)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def keep_request_deadline(client: Any) -> Any:
    """``client`` (a sync ``httpx.Client``), its connection pools made to keep :func:`request_deadline`."""
    base = next(c for c in type(client).__mro__ if c.__name__ == "Client" and c.__module__.startswith("httpx"))
    core = importlib.import_module("httpcore2" if base.__module__.startswith("httpx2") else "httpcore")
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    pools: list[Any] = [getattr(t, "_pool", None) for t in transports if t is not None]
    if not pools or any(getattr(p, "_network_backend", None) is None for p in pools):
        log.warning("this httpx keeps its connection pools elsewhere: a request's deadline bounds each socket "
                    "operation, not the whole request")
        return client
    for pool in pools:
        pool._network_backend = _Backend(pool._network_backend, core)
    return client
