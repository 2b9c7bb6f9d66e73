"""Plumbing shared by remote backends (``openai:``, ``aios:`` and any HTTP backend to come).

One place for what every backend that calls a server needs:

* :class:`RemoteParams`: the key fields (``api_key_ref``, a literal ``api_key``,
  ``api_key_required``) and ``http_transport``, an ``httpx`` transport injected by code (tests
  answer with ``httpx.MockTransport``: a 429, a stall, a dropped connection, without a server).
* :func:`resolve_api_key`: the key from a reference, a literal or an environment variable, with
  the loopback rule (a key is required unless the endpoint never leaves this machine).
* :class:`Endpoint`: a URL kept secret (it may carry credentials) and shown redacted.
* :class:`PerLoop`: one async client per event loop (an httpx pool or a ``grpc.aio`` channel
  cannot move between loops).
* :func:`default_tls`: the TLS context an httpx client makes by default, made once per process
  and shared by every client (loading the CA bundle is most of the cost of a new client).
* :func:`status_error` / :func:`transport_error` / :func:`check_response`: an HTTP status, a
  timeout or a dropped connection as the SDK's error, with the ``Retry-After`` the server
  asked for (the retry loop honours it), its text redacted.
* :class:`HttpClients`: for a backend that speaks HTTP itself (with ``httpx``), a sync client and
  one async client per loop, sharing URL, secret headers and transport; :meth:`HttpClients.post`
  is one request as a flow (:mod:`..flow`): the same code, errors included, for both APIs.

>>> status_error(429, "slow down", {"retry-after": "2"}, where="g at http://h/v1").retry_after_s
2.0
>>> Endpoint("http://user:pw@h/v1?token=t").shown
'http://**********@h/v1?token=**********'
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import os
import ssl
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from ..errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    ConfigurationError,
    RateLimitError,
    RemoteNotFoundError,
)
from ..flow import Flow, Step
from ..net import is_loopback_url
from ..redaction import display_url, redact, remember_secret, remember_url
from ..secrets import KeyField, SecretRef, check_key, resolve_secret_ref
from ..specs import GeneratorParams
from .http_deadline import keep_request_deadline, request_deadline

__all__ = [
    "Endpoint", "HttpClients", "PerLoop", "RemoteParams", "check_response", "resolve_api_key", "retry_after_s", "safe_cause",
    "status_error", "transport_error",
]

T = TypeVar("T")
#: The longest ``Retry-After`` honoured; a longer one falls back to the backoff (a call must end).
MAX_RETRY_AFTER_S = 60.0


class RemoteParams(GeneratorParams):
    """``llm_parameters`` every remote backend shares: where its key comes from, and (from code
    only) the ``httpx`` transport its requests go through."""

    api_key_ref: SecretRef | None = Field(default=None, description="Where the key is: 'env:NAME' or 'file:PATH'.")
    api_key: KeyField | None = Field(default=None, description="Literal key (works, but warns: prefer api_key_ref).")
    api_key_required: bool | None = Field(
        default=None, description="Fail at build time without a key (default: per backend; never for loopback)."
    )
    # An object, not a setting: left out of dumps, of the spec's keys and docs (code_only), and a
    # spec cannot give one (the validator below).
    http_transport: Any = Field(
        default=None, exclude=True, json_schema_extra={"code_only": True},
        description="From code only: an httpx transport (of the httpx the backend's client uses) that every "
        "request goes through, e.g. httpx.MockTransport(handler) in tests.",
    )

    @field_validator("http_transport")
    @classmethod
    def _a_transport(cls, value: Any) -> Any:
        if value is not None and not (hasattr(value, "handle_request") or hasattr(value, "handle_async_request")):
            raise ValueError("http_transport must be an httpx transport object (given from code, not in a spec)")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> RemoteParams:
        if self.api_key is not None and self.api_key_ref is not None:
            raise ValueError("give api_key_ref or api_key, not both")
        return self


def resolve_api_key(
    params: RemoteParams, *, who: str, endpoint: str, env_var: str | None = None, required_default: bool = True,
    hint: str = "give llm_parameters.api_key_ref ('env:NAME' or 'file:PATH')",
) -> SecretStr | None:
    """The key of ``params``: a literal, a reference, else ``env_var`` (None: no implicit variable).

    Required (a ``ConfigurationError`` now, not a 401 at the first call) when ``api_key_required``
    says so, or by default when ``required_default`` is set and ``endpoint`` is not on loopback.
    Every key found is registered with the redactor: no text shows it, log records included.
    """
    key = params.api_key
    if params.api_key_ref is not None:
        key = resolve_secret_ref(params.api_key_ref, who=f"{who}: llm_parameters.api_key_ref")
    elif key is not None:
        check_key(key.get_secret_value(), who=who, source="api_key")
    if key is None and env_var and os.environ.get(env_var, "").strip():
        key = SecretStr(os.environ[env_var].strip())
        check_key(key.get_secret_value(), who=who, source=env_var)
    if key is not None and not key.get_secret_value():
        key = None
    if key is not None:
        remember_secret(key.get_secret_value())
    required = params.api_key_required
    if required is None:
        required = required_default and not is_loopback_url(endpoint)
    if key is None and required:
        raise ConfigurationError(f"{who}: no API key for {endpoint}: {hint}")
    return key


class Endpoint:
    """A URL as given, kept secret (user info, a ``?token=`` query), and as it may be shown."""

    def __init__(self, url: str) -> None:
        url = url.rstrip("/")
        remember_url(url)  # its user info and query values are masked in any text, log records included
        self._url = SecretStr(url)
        #: the URL with user info and query values masked: for messages, reprs, describe()
        self.shown = display_url(url)

    def parts(self) -> tuple[str, dict[str, str]]:
        """The URL without its query, and the query (sent with every request), in clear: for clients only."""
        url = urlsplit(self._url.get_secret_value())
        return urlunsplit((url.scheme, url.netloc, url.path, "", "")), dict(parse_qsl(url.query, keep_blank_values=True))

    def __repr__(self) -> str:
        return f"Endpoint({self.shown!r})"


@functools.cache
def _default_tls(library: str) -> ssl.SSLContext:
    return importlib.import_module(library).create_ssl_context()  # type: ignore[no-any-return]


def default_tls(client_class: type) -> ssl.SSLContext:
    """The TLS context that ``client_class`` (an ``httpx``-family client) makes when given none, made
    once per process. A new client would load the CA bundle again: 25-60 ms, most of the cost of an
    ``AsyncOpenAI`` made for each event loop, and CPU spent inside a call's deadline. An SSL context
    may serve many connections, threads and loops at once. Being made once, it reads
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when the first client is made, not later.

    >>> import httpx
    >>> default_tls(httpx.AsyncClient) is default_tls(httpx.Client)
    True
    """
    library = next(c for c in client_class.__mro__ if c.__module__.startswith("httpx")).__module__
    return _default_tls(library.partition(".")[0])


class PerLoop(Generic[T]):
    """One object per running event loop, made on first use there (thread-safe).

    >>> clients = PerLoop(lambda: object())
    >>> async def same(): return clients.get() is clients.get()
    >>> asyncio.run(same())
    True
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        # weak keys: a loop that is gone takes its client with it
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._by_loop.get(loop)
            if made is None:
                for old in [lp for lp in self._by_loop if lp.is_closed()]:
                    del self._by_loop[old]
                made = self._by_loop[loop] = self._make()
            return made

    def __len__(self) -> int:
        return len(self._by_loop)

    def pop_current(self) -> T | None:
        """This loop's object, forgotten (to close it here)."""
        with self._lock:
            return self._by_loop.pop(asyncio.get_running_loop(), None)

    def drain(self) -> list[tuple[asyncio.AbstractEventLoop, T]]:
        """Every object with its loop, all forgotten."""
        with self._lock:
            items = list(self._by_loop.items())
            self._by_loop.clear()
        return items


# -- errors ----------------------------------------------------------------------------------
def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """The wait a response asks for (``retry-after-ms``, or ``retry-after`` in seconds), if sane."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            value = float((headers or {}).get(name, "")) * scale
        except ValueError:
            continue  # e.g. an HTTP date: use the backoff
        if 0 < value <= MAX_RETRY_AFTER_S:
            return value
    return None


def status_error(
    status: int, message: str, headers: Mapping[str, str] | None = None, *, where: str, model: str | None = None,
    key_hint: str = "check the API key given by api_key_ref",
) -> BackendError:
    """The SDK's error for an HTTP error status (``where`` names generator and endpoint; ``message``
    is the server's text, redacted here). Retryable ones carry the ``Retry-After`` asked for."""
    text = f"{where}: HTTP {status}: {redact(message)}"
    error: BackendError
    if status in (401, 403):
        return AuthenticationError(f"{text} ({key_hint})")
    if status == 404:
        return RemoteNotFoundError(f"{text} (does the endpoint serve model {model!r}?)")
    if status == 429:
        error = RateLimitError(text)
    elif status >= 500 or status in (408, 409):  # what the official openai client retries, too
        error = BackendUnavailableError(text)
    elif 400 <= status < 500:
        return BadRequestError(text)
    else:
        return BackendError(text)
    error.retry_after_s = retry_after_s(headers)
    return error


def body_message(content: bytes) -> str:
    """The message of an error body (``{"error": {"message": ...}}``, ``{"message": ...}``, or text), redacted and cut."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return redact(content[:4096].decode("utf-8", "replace").strip())[:300] or "(empty body)"
    if isinstance(body, dict):
        inner = body.get("error")
        found = inner.get("message") if isinstance(inner, dict) else inner if isinstance(inner, str) else None
        found = found or body.get("message") or body.get("detail")
        if found:
            return redact(str(found))[:500]
    return redact(json.dumps(body))[:300]


def transport_error(exc: Exception, *, where: str, timeout: float) -> Exception:
    """An ``httpx`` (or ``httpx2``) exception, or an ``asyncio`` timeout, as the SDK's error; another
    exception is returned as it is (a bug to see)."""
    names = {c.__name__ for c in type(exc).__mro__}
    if isinstance(exc, TimeoutError) or "TimeoutException" in names:
        return BackendTimeoutError(f"{where}: no answer within {timeout:.3g}s")
    if "TransportError" in names:  # refused, reset, dropped mid-answer, a protocol error
        return BackendUnavailableError(f"{where}: cannot connect: {type(exc).__name__}: {redact(str(exc))}")
    return exc


def check_response(response: Any, *, where: str, model: str | None = None) -> Any:
    """``response`` (an httpx response) if its status is a success, else the SDK's error for it."""
    if response.status_code >= 400:
        raise status_error(
            response.status_code, body_message(response.content), response.headers, where=where, model=model
        )
    return response


def safe_cause(exc: BaseException) -> BaseException | None:
    """``exc`` to chain as the cause, unless its text, or that of an exception it chains, holds a
    secret (an endpoint echoing the key, a header value in an httpx error): a traceback prints them all."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if redact(text) != text:
            return None
        current = current.__cause__ or current.__context__
    return exc


class HttpClients:
    """``httpx`` clients of one endpoint: the only objects holding its URL and secret headers in clear.

    >>> import httpx
    >>> from agent_embeddings.flow import run
    >>> answer = httpx.MockTransport(lambda request: httpx.Response(200, json={"path": request.url.path}))
    >>> clients = HttpClients(Endpoint("http://127.0.0.1:9/v1"), timeout_s=5, transport=answer)
    >>> run(clients.post("/embed", {"texts": ["x"]}, where="g")).json()
    {'path': '/v1/embed'}
    """

    def __init__(
        self, endpoint: Endpoint, *, timeout_s: float, headers: Mapping[str, SecretStr] | None = None,
        transport: Any = None,
    ) -> None:
        import httpx

        self._httpx, self.endpoint, self.timeout_s = httpx, endpoint, timeout_s
        url, query = endpoint.parts()
        clear = {name: value.get_secret_value() for name, value in (headers or {}).items()}
        options: dict[str, Any] = {"base_url": url, "params": query, "headers": clear, "timeout": timeout_s}
        # a custom transport (a test's MockTransport) has no pools to keep the deadline, and no TLS
        self.sync = httpx.Client(**options, transport=transport) if transport else keep_request_deadline(
            httpx.Client(**options, verify=default_tls(httpx.Client))
        )
        self._async: PerLoop[Any] = PerLoop(lambda: httpx.AsyncClient(
            **options, **({"transport": transport} if transport else {"verify": default_tls(httpx.AsyncClient)})
        ))

    def post(self, path: str, body: Any, *, where: str, model: str | None = None) -> Flow[Any]:
        """POST ``body`` as JSON; the response of a success, else the SDK's error (sync or async alike)."""
        path = path.lstrip("/")  # relative to base_url's path
        try:
            response = yield Step(
                lambda: self._sync_post(path, body),
                lambda: self._async_post(path, body),
            )
        except Exception as exc:
            error = transport_error(exc, where=where, timeout=self.timeout_s)
            if error is exc:
                raise
        else:
            return check_response(response, where=where, model=model)
        raise error  # outside the except block: a text that holds a secret is not kept as context

    def _sync_post(self, path: str, body: Any) -> Any:
        # timeout_s bounds the whole request, as asyncio.timeout does the async one: httpx's own
        # timeouts bound each socket operation, which a server trickling bytes never trips
        with request_deadline(self.timeout_s):
            return self.sync.post(path, json=body)

    async def _async_post(self, path: str, body: Any) -> Any:
        async with asyncio.timeout(self.timeout_s):  # from before the client is made: it counts too
            return await self._async.get().post(path, json=body)

    def close(self) -> None:
        self.sync.close()
        self._async.drain()  # their connections close with their event loop
