"""The SDK's exceptions: callers only ever need to catch these.

    AgentEmbeddingsError
     ├── SpecError                  a subject spec or ModelItem is invalid (names file, item, field)
     │    └── UnknownBackendError   no plugin owns the block id's prefix (lists known prefixes)
     ├── ConfigurationError         valid spec, unusable set-up (device, secret, model files)
     │    ├── ModelNotFoundError    local weights not found (says where it looked)
     │    └── UnusableSecretError   a secret is there but wrong (a key with a line break, a FIFO)
     ├── PluginError                a plugin misbehaves (two plugins claim one prefix, ...)
     ├── UnknownGeneratorError      no generator of that name (lists known names)
     ├── InvalidInputError          bad text argument (None, non-string, empty, ...)
     │    ├── InvalidInputTypeError a text argument of the wrong type (also a TypeError)
     │    └── CorpusError           a bulk input cannot be read, or has bad rows (names path, column, row id)
     ├── BulkOutputError            a bulk output directory cannot hold this job (a file, another input)
     ├── EmbeddingSpaceError        a generator does not embed into an index's space (identity or probes)
     ├── CallCancelledError         a call's caller left (cancelled); its worker thread stopped early
     ├── EmbeddingContractError     a backend broke the output contract
     │    └── DimensionMismatchError    declared dims != delivered dims (names both)
     └── BackendError               a call to a backend failed
          ├── AuthenticationError       rejected credentials
          ├── RateLimitError            rate limited / server overloaded
          ├── BadRequestError           the backend refused the input
          ├── RemoteNotFoundError       the backend does not know the model / block
          ├── BackendUnavailableError   could not reach the backend
          └── BackendTimeoutError       the backend did not answer in time

Errors carry context in their message (generator name, spec file and field, target
endpoint) and never a secret: the root class redacts every message it is given. Library
errors (openai, grpc, torch) are translated where the library is called, with the original
chained as ``__cause__`` unless its text holds a secret.
"""

from __future__ import annotations

from typing import Any, Self

from .redaction import redact

__all__ = [
    "AgentEmbeddingsError",
    "AuthenticationError",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BadRequestError",
    "BulkOutputError",
    "CallCancelledError",
    "ConfigurationError",
    "CorpusError",
    "DimensionMismatchError",
    "EmbeddingContractError",
    "EmbeddingSpaceError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "ModelNotFoundError",
    "PluginError",
    "RateLimitError",
    "RemoteNotFoundError",
    "SpecError",
    "UnknownBackendError",
    "UnknownGeneratorError",
    "UnusableSecretError",
]


class AgentEmbeddingsError(Exception):
    """Root of every error raised by agent-embeddings.

    The message is one line. ``detail`` holds what a library said at length (a multi-line
    pyarrow message, say), for logs and ``AGENT_EMBEDDINGS_DEBUG=1``; None when there is none.

    Message and detail are redacted when set (:func:`~agent_embeddings.redaction.redact`):
    whatever they quote (an endpoint's answer, a library's error), a registered secret never
    reaches ``str(error)``, a traceback, a log line, the CLI or a server's answer.
    """

    detail: str | None = None

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, redact(value) if name == "detail" and isinstance(value, str) else value)

    @classmethod
    def from_library(cls, summary: str, exc: BaseException) -> Self:
        """``summary: <first line of exc>``, with the library's whole text as ``detail``."""
        text = str(exc).strip()
        first = text.splitlines()[0].strip() if text else type(exc).__name__
        error = cls(f"{summary}: {first}")
        if text != first:
            error.detail = text
        return error


class SpecError(AgentEmbeddingsError, ValueError):
    """A subject spec or ModelItem is invalid; the message names the file, item and field."""


class UnknownBackendError(SpecError):
    """A block id's prefix is owned by no installed backend; the message lists known prefixes."""


class ConfigurationError(AgentEmbeddingsError):
    """The spec is valid but cannot be used here (missing device, secret or model files)."""


class ModelNotFoundError(ConfigurationError):
    """Local model weights could not be found; the message lists the places searched."""


class UnusableSecretError(ConfigurationError):
    """A secret is there but cannot be a key (two lines, binary, a FIFO, a kernel pseudo-file).

    Unlike a key that is merely not set here (which another machine may have), this is wrong
    anywhere, so ``validate`` fails on it even without ``--check``. The value is never shown.
    """


class PluginError(AgentEmbeddingsError):
    """A plugin misbehaves, for example two plugins claim the same prefix."""


class UnknownGeneratorError(AgentEmbeddingsError, LookupError):
    """No generator is registered under that name; the message lists the known names."""


class InvalidInputError(AgentEmbeddingsError, ValueError):
    """The text(s) passed to a generator are not valid input."""


class InvalidInputTypeError(InvalidInputError, TypeError):
    """A text argument has the wrong type: None, a number, one string where a list belongs.

    Also a ``TypeError``, as Python's own wrong-type errors are, so code catching either works.
    """


class CorpusError(InvalidInputError):
    """A bulk job's input cannot be read or has bad rows; the message names path, column and row id."""


class BulkOutputError(AgentEmbeddingsError):
    """A bulk job's output directory cannot take this job (it is a file, or holds another input's shards)."""


class EmbeddingSpaceError(AgentEmbeddingsError):
    """A generator's vectors would not live in an index's embedding space (identity or probe vectors differ)."""


class CallCancelledError(AgentEmbeddingsError):
    """The task awaiting a backend call was cancelled (its client left, the server shut down), so the
    worker thread doing the call stopped between two steps; no caller waits for this error."""


class EmbeddingContractError(AgentEmbeddingsError):
    """A backend returned vectors that break the contract (NaN, wrong count or shape)."""


class DimensionMismatchError(EmbeddingContractError):
    """The declared ``dims`` differs from the width of the vectors the backend delivers."""


class BackendError(AgentEmbeddingsError):
    """A call to an embedding backend failed.

    ``retryable`` tells whether retrying the same call may succeed (unavailable,
    timeout, rate limited); ``retry_after_s`` is the wait the backend asked for, if it did.
    """

    retryable: bool = False
    retry_after_s: float | None = None


class AuthenticationError(BackendError):
    """The backend rejected the credentials (HTTP 401/403, gRPC UNAUTHENTICATED)."""


class RateLimitError(BackendError):
    """The backend is rate limiting or overloaded (HTTP 429, gRPC RESOURCE_EXHAUSTED)."""

    retryable = True


class BadRequestError(BackendError):
    """The backend refused the request as invalid (HTTP 400, gRPC INVALID_ARGUMENT)."""


class RemoteNotFoundError(BackendError):
    """The backend does not serve the requested model or block (HTTP 404, gRPC NOT_FOUND)."""


class BackendUnavailableError(BackendError):
    """The backend could not be reached or failed on its side (connection errors, 5xx)."""

    retryable = True


class BackendTimeoutError(BackendError):
    """The backend did not answer within the deadline."""

    retryable = True
