"""The HTTP server's pure-ASGI middlewares (cheaper per request than Starlette's BaseHTTPMiddleware):
request metrics and the shortcut that serves the hot route (admission: :mod:`.http_admission`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["RequestMetrics", "Shortcut"]

_ROUTES = ("/v1/embeddings", "/v1/models", "/health", "/metrics")


class RequestMetrics:
    """Requests by route and status, their latency and the requests in flight (pure ASGI: cheap)."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = next((r for r in _ROUTES if path == r or path.startswith(r + "/")), "other")
        status = 500
        answered = False
        m = self.metrics

        async def sending(message: Any) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
            await send(message)

        started = time.perf_counter()
        m.in_flight.labels("http").inc()
        try:
            await self.app(scope, receive, sending)
            if not answered:  # the client left first (its request was cancelled): nginx's 499
                status = 499
        finally:
            m.in_flight.labels("http").dec()
            m.latency.labels("http", route).observe(time.perf_counter() - started)
            m.requests.labels("http", route, str(status)).inc()


class Shortcut:
    """Serve one hot route straight from ASGI: ``handler(scope, body)`` answers ``method path``,
    in front of the framework's router, dependency injection and exception middlewares; every
    other request goes on to ``app``.

    The route stays declared on the FastAPI app (its schema, its docs); the app's own time for a
    single-sentence ``POST /v1/embeddings`` fell by about a third (~310 to ~200 us) without the router.
    """

    def __init__(
        self, app: Any, method: str, path: str, handler: Callable[[Any, bytes], Awaitable[Any]]
    ) -> None:
        self.app, self.method, self.path, self.handler = app, method, path, handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the client left: nobody to answer
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        response = await self.handler(scope, b"".join(chunks))
        await response(scope, receive, send)
