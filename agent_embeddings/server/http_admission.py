"""Admission of HTTP requests before their body is read, and an admitted request as a cancellable unit.

Every request passes here first (pure ASGI: one pass over the headers, no framework):

1. the API key, for the protected routes (401): ``POST /v1/embeddings``, ``GET /v1/models[/id]``;
   ``/health``, ``/metrics`` and the docs stay open;
2. ``Content-Type: application/json`` for ``POST /v1/embeddings`` (415): no browser "simple
   request" (``text/plain``, a form) reaches the model without a CORS preflight;
3. ``Content-Length`` against ``max_request_bytes`` (413);
4. a slot among ``max_concurrency`` for ``POST /v1/embeddings`` (429 with ``Retry-After``);

and only then is the body read, counting bytes and stopping at the limit (413) when it comes
chunked. A refusal costs a header scan, whatever the body behind it: the body is not read
(``Connection: close`` when more than a few KiB of it are announced; uvicorn discards a small
rest and keeps the connection).

While a request holds its slot, a watcher waits for the ASGI ``http.disconnect``: a client that
hangs up cancels its handler, which frees the slot at once and cancels the work (its queued texts
leave the micro-batch; a running ``hf:`` call stops after its forward pass, see
:mod:`agent_embeddings.cancellation`). At shutdown, :meth:`Admission.abort` answers the requests
still in flight 503 and cancels their work the same way.

>>> admission = Admission(ServerConfig())  # doctest: +SKIP
>>> app = Admit(app, admission)             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .config import ServerConfig
from .http_middleware import note_request
from .openai_schema import error_body

__all__ = ["Admission", "Admit"]

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

EMBEDDINGS = "/v1/embeddings"
_MODELS = "/v1/models"
#: An unread body up to this size is left to uvicorn to discard, keeping the connection (a client
#: retrying after a 429 reuses it); beyond it the connection is closed instead of read.
_DISCARD_BYTES = 64 * 1024
#: A request watches for its client leaving once it has run this long: most are answered sooner,
#: and never pay for the watcher (a task per request: a fifth of the app's time on the hot path).
#: One sweep every 50 ms while requests are in flight starts the watchers, no timer per request.
_WATCH_AFTER_S = 0.05


class _Ticket:
    """An admitted request holding a slot: its task, and why it was cancelled (None: it was not)."""

    __slots__ = ("reason", "since", "started", "task", "watch", "watcher")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.reason: str | None = None
        self.started = False  # the response has begun: too late to cancel or to answer otherwise
        #: once the body is read: the watcher to start (when the request runs long), and since when
        self.watch: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.since = 0.0
        self.watcher: asyncio.Task[None] | None = None

    def cancel(self, reason: str) -> None:
        if self.reason is None and not self.started and self.task is not None:
            self.reason = reason
            self.task.cancel()


class _TooLarge(Exception):
    pass


class Admission:
    """The checks, the slots and the requests in flight of one HTTP server (shared with :class:`Admit`)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        #: requests holding a slot (being read or worked on)
        self.in_flight = 0
        self._tickets: set[_Ticket] = set()
        self._sweeping = False
        self._closing = False

    def abort(self) -> int:
        """Answer every request in flight 503 and cancel its work (the grace period is over); later
        requests get 503 at once. Returns how many were cut off."""
        self._closing = True
        tickets = [t for t in self._tickets if not t.started]
        for ticket in tickets:
            ticket.cancel("shutdown")
        return len(tickets)

    async def __call__(self, app: Any, scope: Any, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        embeddings = path == EMBEDDINGS and method == "POST"
        protected = embeddings or (method == "GET" and (path == _MODELS or path.startswith(_MODELS + "/")))
        authorization = length = content_type = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                chunked = True
        declared = int(length) if length is not None and length.isdigit() else None
        # a body we do not read: left to uvicorn to discard when small, else the connection closes
        close = chunked or (declared or 0) > _DISCARD_BYTES or (length is not None and declared is None)
        cfg = self.config
        if protected and cfg.api_keys and not _key_ok(cfg, authorization):
            return await _refuse(send, 401, "Missing or incorrect API key: send 'Authorization: Bearer <key>'.",
                                 code="invalid_api_key", close=close)
        if embeddings and not _is_json(content_type):
            return await _refuse(send, 415, "Send the request body as JSON, with 'Content-Type: application/json'.",
                                 code="unsupported_media_type", close=close)
        if length is not None and declared is None:
            return await _refuse(send, 400, "The Content-Length header is not a number.", close=True)
        if declared is not None and declared > cfg.max_request_bytes:
            return await _refuse(send, 413, _too_large(cfg), code="request_too_large", close=True)
        if not embeddings:
            if declared or chunked:  # a body where none is expected: read it within the limit all the same
                await self._with_body(app, scope, receive, send, None)
            else:
                await app(scope, receive, send)
            return
        if self._closing:
            return await _refuse(send, 503, _SHUTTING_DOWN, "server_error", code="server_shutting_down", close=True)
        if self.in_flight >= cfg.max_concurrency:  # fail fast: no unbounded queue
            return await _refuse(
                send, 429, f"The server is at its limit of {cfg.max_concurrency} concurrent requests; retry shortly.",
                "rate_limit_error", code="server_busy", close=close, headers=[(b"retry-after", b"1")],
            )
        ticket = _Ticket(asyncio.current_task())
        self.in_flight += 1
        self._tickets.add(ticket)
        try:
            await self._with_body(app, scope, receive, send, ticket)
        except asyncio.CancelledError:
            if ticket.reason is None:  # not ours: uvicorn's own cut-off, say
                raise
            if ticket.task is not None:
                ticket.task.uncancel()
            if ticket.reason == "shutdown" and not ticket.started:
                await _refuse(send, 503, _SHUTTING_DOWN, "server_error", code="server_shutting_down", close=True)
        finally:
            self.in_flight -= 1
            self._tickets.discard(ticket)

    async def _with_body(self, app: Any, scope: Any, receive: Receive, send: Send, ticket: _Ticket | None) -> None:
        """Read the body (counted, within the limit), then run ``app`` on it; with a ticket, a
        client that hangs up meanwhile cancels the run."""
        try:
            body = await _read_body(receive, self.config.max_request_bytes)
        except _TooLarge:
            return await _refuse(send, 413, _too_large(self.config), code="request_too_large", close=True)
        if body is None:  # the client left while sending
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        if ticket is None:
            await app(scope, replay, send)
            return

        async def sending(message: Any) -> None:
            ticket.started = True
            await send(message)

        async def watch() -> None:
            while True:  # uvicorn answers http.disconnect when the client left (or the response is done)
                if (await receive())["type"] == "http.disconnect":
                    ticket.cancel("disconnect")
                    return

        loop = asyncio.get_running_loop()
        ticket.watch, ticket.since = watch, loop.time()
        if not self._sweeping:
            self._sweep_later(loop)
        try:
            await app(scope, replay, sending)
        finally:
            ticket.watch = None
            if ticket.watcher is not None:
                ticket.watcher.cancel()

    def _sweep_later(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeping = True
        loop.call_later(_WATCH_AFTER_S, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the watchers of the requests that have run for _WATCH_AFTER_S; look again while some have not."""
        self._sweeping = False
        now, pending = loop.time(), False
        for ticket in self._tickets:
            if ticket.watch is not None and ticket.watcher is None:
                if now - ticket.since >= _WATCH_AFTER_S:
                    ticket.watcher = loop.create_task(ticket.watch())
                else:
                    pending = True
        if pending:
            self._sweep_later(loop)


class Admit:
    """The ASGI middleware running every HTTP request through an :class:`Admission`."""

    def __init__(self, app: Any, admission: Admission) -> None:
        self.app, self.admission = app, admission

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.admission(self.app, scope, receive, send)


_SHUTTING_DOWN = "The server is shutting down and did not finish this request; retry shortly."


def _key_ok(config: ServerConfig, authorization: bytes | None) -> bool:
    if authorization is None:
        return False
    scheme, _, key = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    try:
        text = key.strip().decode("ascii")
    except UnicodeDecodeError:  # keys are ASCII: this one cannot match
        return False
    return bool(text) and config.accepts_key(text)


def _is_json(content_type: bytes | None) -> bool:
    """``application/json`` or ``application/*+json``, with any parameters (as FastAPI reads a JSON body)."""
    if content_type is None:
        return False
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def _too_large(config: ServerConfig) -> str:
    return f"The request body is larger than this server's limit of {config.max_request_bytes} bytes."


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None when the client left; :class:`_TooLarge` past ``limit`` bytes."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _refuse(
    send: Send, status: int, message: str, type_: str = "invalid_request_error", *, code: str | None = None,
    close: bool = False, headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """An answer in OpenAI's error shape, sent straight from ASGI (its cause noted for RequestMetrics)."""
    note_request(status=status, error_type=code or type_)
    body = json.dumps(error_body(message, type_, code=code)).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or ())]
    if close:  # the unread body makes the connection unusable
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
