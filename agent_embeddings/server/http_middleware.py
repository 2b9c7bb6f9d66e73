"""The HTTP server's request metrics, a pure-ASGI middleware (cheaper per request than Starlette's
BaseHTTPMiddleware); the admission is :mod:`.http_admission`, the hot route :mod:`.http_route`."""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from typing import Any

__all__ = ["REQUEST_NOTE", "RequestMetrics", "note_request"]

_ROUTES = ("/v1/embeddings", "/v1/models", "/health", "/metrics")


#: What the app tells :class:`RequestMetrics` about the request being answered: ``texts`` (how
#: many), and ``status`` with ``error_type`` (the cause of an error answer, see metrics.py). A
#: ContextVar rather than the scope's "state": the code that knows (``ApiError.response``, the
#: embeddings handler) is not always handed the scope, and the middleware awaits the app in the
#: same task, so the app's writes reach it. One small dict per request.
REQUEST_NOTE: ContextVar[dict[str, Any] | None] = ContextVar("agent_embeddings_request_note", default=None)

# The error type of an answer that noted none: the protocol's (431, ...), /health's 503.
_ERROR_FOR_STATUS = {
    400: "invalid_request_error", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
    413: "request_too_large", 415: "unsupported_media_type", 422: "invalid_request_error", 429: "server_busy",
    431: "headers_too_large", 499: "cancelled", 500: "server_error", 503: "unavailable",
}


def note_request(**values: Any) -> None:
    """Tell :class:`RequestMetrics` about the request being answered (no-op outside one)."""
    note = REQUEST_NOTE.get()
    if note is not None:
        note.update(values)


class RequestMetrics:
    """Counts every request once when it is answered: by route and status, its latency, and as an
    error by cause when it is not a success (any status >= 400, whoever answered it: the app, the
    router or another middleware); writes its access-log line; tracks requests in flight. Pure ASGI.

    A request that ends without an answer counts as 499 ``cancelled`` (the client left) or, when
    the app raised, 500 ``server_error``.
    """

    def __init__(self, app: Any, metrics: Any, crash: Any = None) -> None:
        self.app, self.metrics = app, metrics
        #: ``crash() -> Response``: answers a request whose app raised before answering (what
        #: Starlette's ServerErrorMiddleware does outside a FastAPI app's middleware; see http_app)
        self.crash = crash

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = next((r for r in _ROUTES if path == r or path.startswith(r + "/")), "other")
        status = 0
        m = self.metrics

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        note: dict[str, Any] = {}
        token = REQUEST_NOTE.set(note)
        in_flight = m.child(m.in_flight, "http")
        in_flight.inc()
        crashed = False
        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            raise
        except Exception:
            crashed = True
            if self.crash is not None and not status:
                await self.crash()(scope, receive, sending)  # then re-raised: uvicorn logs it, as Starlette lets it
            raise
        except BaseException:
            crashed = True
            raise
        finally:
            REQUEST_NOTE.reset(token)
            in_flight.dec()
            if not status:  # nothing was answered
                status = 500 if crashed else 499
            error_type = None
            if status >= 400:
                # the handler's cause, if it noted one for this very answer (a middleware may have replaced it)
                noted = note.get("error_type") if note.get("status") == status else None
                error_type = noted or _ERROR_FOR_STATUS.get(status, f"http_{status}")
            m.request_done(
                "http", route, str(status), time.perf_counter() - started,
                method=scope.get("method", ""), texts=note.get("texts"), error_type=error_type,
            )
