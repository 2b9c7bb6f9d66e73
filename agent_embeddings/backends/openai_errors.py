"""Errors of the official ``openai`` client translated into the SDK's, at the one place it is called.

Messages name the generator and the endpoint, never the key (every text goes through
:func:`~agent_embeddings.redaction.redact`); a rate limit or an overloaded server carries the
``Retry-After`` it asked for, which the retry loop honours.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    RateLimitError,
    RemoteNotFoundError,
)
from ..redaction import redact

__all__ = ["safe_cause", "translate_error"]


def translate_error(exc: Exception, *, where: str, model: str | None, timeout: float) -> Exception:
    """The SDK's error for an exception raised by the client (``where`` names generator and endpoint)."""
    import openai

    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):  # TimeoutError: asyncio.timeout around a request
        return BackendTimeoutError(f"{where}: no answer within {timeout:.3g}s")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f": {type(cause).__name__}: {redact(str(cause))}" if cause else ""
        return BackendUnavailableError(f"{where}: cannot connect{detail}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = _status_message(exc)
        text = f"{where}: HTTP {status}: {message}"
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return AuthenticationError(f"{text} (check the API key given by api_key_ref / OPENAI_API_KEY)")
        if isinstance(exc, openai.RateLimitError):
            limited = RateLimitError(text)
            limited.retry_after_s = _retry_after(exc)
            return limited
        if isinstance(exc, openai.NotFoundError):
            return RemoteNotFoundError(f"{text} (does the endpoint serve model {model!r}?)")
        if status >= 500 or status in (408, 409):  # what the official client retries, too
            down = BackendUnavailableError(text)
            down.retry_after_s = _retry_after(exc)
            return down
        if 400 <= status < 500:
            return BadRequestError(text)
        return BackendError(text)
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return BackendError(f"{where}: the response is not valid JSON")
    if isinstance(exc, openai.OpenAIError):
        return BackendError(f"{where}: {type(exc).__name__}: {redact(str(exc))}")
    return exc  # not the client's: a bug to see as it is


def safe_cause(exc: Exception) -> Exception | None:
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


def _retry_after(exc: Any) -> float | None:
    """The wait a response asks for (``retry-after-ms``, or ``retry-after`` in seconds), if sane."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, "")) * scale
        except ValueError:
            continue  # e.g. an HTTP date: use the backoff
        if 0 < value <= 60:
            return value
    return None


def _status_message(exc: Any) -> str:
    """The endpoint's message, redacted before it is cut (a secret cut in two is not recognised)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return redact(str(body["message"]))[:500]
    if isinstance(body, str) and body.strip():
        return redact(body.strip())[:300]
    return redact(getattr(exc, "message", None) or type(exc).__name__)
