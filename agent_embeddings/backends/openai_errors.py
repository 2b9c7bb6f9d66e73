"""Errors of the official ``openai`` client translated into the SDK's, at the one place it is called.

Messages name the generator and the endpoint, never the key (every text goes through
:func:`~agent_embeddings.redaction.redact`); a rate limit or an overloaded server carries the
``Retry-After`` it asked for, which the retry loop honours.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import BackendError, BackendTimeoutError, BackendUnavailableError
from ..redaction import redact
from .remote import safe_cause, status_error

__all__ = ["safe_cause", "translate_error"]


def translate_error(exc: Exception, *, where: str, model: str | None, timeout: float) -> Exception:
    """The SDK's error for an exception raised by the client (``where`` names generator and endpoint).

    Statuses map as for every HTTP backend (:func:`.remote.status_error`); only the client's own
    exception types are read here."""
    import openai

    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):  # TimeoutError: asyncio.timeout around a request
        return BackendTimeoutError(f"{where}: no answer within {timeout:.3g}s")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f": {type(cause).__name__}: {redact(str(cause))}" if cause else ""
        return BackendUnavailableError(f"{where}: cannot connect{detail}")
    if isinstance(exc, openai.APIStatusError):
        return status_error(
            exc.status_code, _status_message(exc), exc.response.headers, where=where, model=model,
            key_hint="check the API key given by api_key_ref / OPENAI_API_KEY",
        )
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return BackendError(f"{where}: the response is not valid JSON")
    if isinstance(exc, openai.OpenAIError):
        return BackendError(f"{where}: {type(exc).__name__}: {redact(str(exc))}")
    return exc  # not the client's: a bug to see as it is


def _status_message(exc: Any) -> str:
    """The endpoint's message, redacted before it is cut (a secret cut in two is not recognised)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return redact(str(body["message"]))[:500]
    if isinstance(body, str) and body.strip():
        return redact(body.strip())[:300]
    return redact(getattr(exc, "message", None) or type(exc).__name__)
