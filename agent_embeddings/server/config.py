"""Settings shared by the HTTP and gRPC servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

__all__ = ["DEFAULT_GRACE_PERIOD_S", "DEFAULT_MAX_CONCURRENCY", "DEFAULT_MAX_INPUTS", "DEFAULT_MAX_REQUEST_BYTES", "ServerConfig"]

DEFAULT_MAX_INPUTS = 2048
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_GRACE_PERIOD_S = 10.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServerConfig:
    """Limits, authentication and TLS for both servers.

    ``max_concurrency`` bounds requests being worked on at once; beyond it a server answers
    429 / RESOURCE_EXHAUSTED at once instead of queuing without limit.
    """

    api_keys: tuple[SecretStr, ...] = ()
    max_inputs: int = DEFAULT_MAX_INPUTS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    grace_period_s: float = DEFAULT_GRACE_PERIOD_S
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    cors_origins: tuple[str, ...] = field(default=())
    #: refuse a text longer than this many characters (HTTP 413, gRPC INVALID_ARGUMENT); None: no
    #: limit here (``hf:`` models still cut what their tokenizer would never read)
    max_input_chars: int | None = None
    #: port of the gRPC server's Prometheus endpoint (0: any free port; None: none). The HTTP
    #: server always answers ``/metrics`` itself.
    metrics_port: int | None = None
    #: HTTP: the largest request head (request line and headers) read; beyond it 431
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    #: HTTP: seconds a client may take to send a request's head, or the next piece of its body;
    #: then the connection is closed (408 when part of a head came)
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S

    def accepts_key(self, presented: str | None) -> bool:
        """True when no keys are configured or ``presented`` is one of them (constant time)."""
        if not self.api_keys:
            return True
        if presented is None:
            return False
        import hmac

        return any(hmac.compare_digest(presented, k.get_secret_value()) for k in self.api_keys)
