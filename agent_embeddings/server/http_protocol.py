"""uvicorn's httptools protocol with the bounds it lacks: how large a request head may be (431), and
how long a client may take to send it or the next piece of its body (then the connection closes).

uvicorn arms no timer while a request is being received (its keep-alive timer runs only between
requests, and any byte resets it), and httptools keeps a header of any length in memory: a client
trickling header bytes held its connection forever, and a 100 MB header was read whole and served.
Here a head must be complete within ``read_timeout_s`` of its first byte (of the connection, for
the first request), each body chunk must follow the previous within ``read_timeout_s``, and a head
stops being read at ``max_header_bytes``. Refusals use OpenAI's error shape, as the app's do.
"""

from __future__ import annotations

import json
import logging
from asyncio import TimerHandle, Transport
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .openai_schema import error_body

__all__ = ["BoundedHttpToolsProtocol"]

log = logging.getLogger("agent_embeddings.server.http")


class _HeadTooLarge(Exception):
    """Stops the parser inside a callback."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with a head size limit and read timeouts; see :meth:`configured`."""

    max_header_bytes = 64 * 1024
    read_timeout_s = 10.0
    #: the server's ServerMetrics: the protocol's own answers are counted and logged as the app's are
    metrics: Any = None

    @classmethod
    def configured(
        cls, max_header_bytes: int, read_timeout_s: float, metrics: Any = None
    ) -> type[BoundedHttpToolsProtocol]:
        """A subclass with these bounds, for ``uvicorn.Config(http=...)``."""
        settings = {"max_header_bytes": max_header_bytes, "read_timeout_s": read_timeout_s, "metrics": metrics}
        return type(cls.__name__, (cls,), settings)

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport, self.loop))  # type: ignore[arg-type]
        self._head: int | None = 0  # bytes of the request head received so far; None: not in a head
        self._head_size = 0  # the head as parsed: URL, header names and values
        self._timer: TimerHandle | None = None
        self._refused = False
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, with the head counted and our refusals told from a malformed request
        if self._refused:
            return
        if self._head is not None:
            self._head += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self._refused:
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._head is not None and self._head > self.max_header_bytes:  # all of it head: none was complete
            self._refuse_head()

    # -- parser callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        if self._timer is None:  # a head after a keep-alive pause: its time starts with its first byte
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_size > self.max_header_bytes:  # a head that came in one read: measured as parsed
            self._refuse_head()
            raise _HeadTooLarge
        self._head = None
        self._arm()  # now for the body's first chunk (disarmed at once when there is none)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._arm()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._head = 0
        super().on_message_complete()

    # -- the bounds ----------------------------------------------------------------------------
    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.read_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # uvicorn stopped reading (a pipelined request waits): not the client's delay
            self._arm()
            return
        if self._head:  # part of a head came, not the rest: tell the client why
            self._answer(408, f"The request head did not arrive within {self.read_timeout_s:g} s.", "request_timeout")
            return
        # Nothing of a head (an idle connection), or a body that stopped coming: close. The app
        # reading that body sees the client gone (http.disconnect) and frees what it held.
        log.debug("closing a connection from %s: nothing received for %g s", self.client, self.read_timeout_s)
        self.transport.close()

    def _refuse_head(self) -> None:
        self._answer(431, f"The request head is larger than this server's limit of {self.max_header_bytes} bytes.",
                     "request_header_too_large")

    def send_400_response(self, msg: str) -> None:
        self._answer(400, msg, "invalid_http_request")

    def _answer(self, status: int, message: str, code: str) -> None:
        """A refusal in OpenAI's shape, written on the transport (no request is being answered), then close."""
        self._refused = True
        self._disarm()
        body = json.dumps(error_body(message, "invalid_request_error", code=code)).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()
        if self.metrics is not None:  # no ASGI request reached RequestMetrics: count it here
            self.metrics.request_done("http", "other", str(status), 0.0, error_type=code)


class _OneWrite:
    """A connection's transport that sends a response's head with its body, in one write.

    uvicorn writes the head at ``http.response.start`` and the body at ``http.response.body``: two
    sends, two TCP segments (TCP_NODELAY) and two wake-ups of the client for every answer; the
    first send was about a quarter of the event loop's time per request (py-spy, loopback). A
    head is held until the next write, and sent alone at the end of the loop's iteration at the
    latest (an app that streams, a HEAD request, a 204); everything else passes through.
    """

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: Transport, loop: Any) -> None:
        self._transport, self._loop = transport, loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):  # uvicorn's response head
            self._head = data
            self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, pause_reading, get_extra_info, ...
        return getattr(self._transport, name)


_REASONS: dict[int, bytes] = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
