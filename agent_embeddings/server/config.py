"""Settings shared by the HTTP and gRPC servers, checked when they are made.

>>> ServerConfig(max_concurrency=0)
Traceback (most recent call last):
...
agent_embeddings.errors.ConfigurationError: max_concurrency (--max-concurrency) must be an integer from 1 to 2147483647, got 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_GRACE_PERIOD_S",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_INPUTS",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_READ_TIMEOUT_S",
    "MAX_INT32",
    "ServerConfig",
    "parse_api_keys",
]

DEFAULT_MAX_INPUTS = 2048
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_GRACE_PERIOD_S = 10.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_READ_TIMEOUT_S = 10.0
#: ``serve``'s thread switch interval (``sys.setswitchinterval``; Python's own is 5 ms). A model thread
#: coming back from a forward pass (which ran without the GIL) waits for the thread holding it, the
#: event loop or the other stream's worker, up to the interval. With ONNX Runtime's two streams behind
#: the HTTP server at 160-170 requests/s on 2 cores, 1 ms gave a lower median p50 in each of three
#: interleaved runs (29 vs 39, 36 vs 47, 47 vs 57 ms) and a lower median p99 in two (90 vs 121, 114
#: vs 155 ms; 239 vs 208 in the noisiest): ``python -m benchmarks.fixed_rate``, docs/servers.md.
DEFAULT_SWITCH_INTERVAL_MS = 1.0
#: gRPC's message-size options are C ints, and Info announces the limits as 32-bit fields.
MAX_INT32 = 2**31 - 1

# setting -> (CLI flag, smallest value); each must be an int in [smallest, MAX_INT32] (or None where noted)
_INT_SETTINGS = {
    "max_inputs": ("--max-inputs", 1),
    "max_request_bytes": ("--max-request-bytes", 1),
    "max_concurrency": ("--max-concurrency", 1),
    "max_input_chars": ("--max-input-chars", 1),
    "max_header_bytes": ("--max-header-bytes", 1024),  # a request line and a few headers
}


def parse_api_keys(text: str) -> tuple[SecretStr, ...]:
    """``AGENT_EMBEDDINGS_API_KEYS``: comma-separated keys, each stripped; empty items are skipped."""
    return tuple(SecretStr(k.strip()) for k in text.split(",") if k.strip())


@dataclass(frozen=True)
class ServerConfig:
    """Limits, authentication and TLS for both servers; a bad value is a ConfigurationError here.

    ``max_concurrency`` bounds requests being worked on at once; beyond it a server answers
    429 / RESOURCE_EXHAUSTED at once instead of queuing without limit. ``max_request_bytes``
    bounds what a caller sends (HTTP body, gRPC request message), never the answer.

    >>> ServerConfig(api_keys=(SecretStr(" k2 "),)).accepts_key("k2")
    True
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

    def __post_init__(self) -> None:
        # Checked here, not only in the CLI: the Python API builds servers too. A bad limit would
        # otherwise answer every request 413/429 (0, -1) or lift gRPC's limit altogether (-1).
        for name, (flag, smallest) in _INT_SETTINGS.items():
            value = getattr(self, name)
            if value is None and name == "max_input_chars":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not smallest <= value <= MAX_INT32:
                raise ConfigurationError(
                    f"{name} ({flag}) must be an integer from {smallest} to {MAX_INT32}, got {value!r}"
                )
        grace = self.grace_period_s
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not (math.isfinite(grace) and grace >= 0):
            raise ConfigurationError(f"grace_period_s (--grace-period) must be a finite number of seconds >= 0, got {grace!r}")
        timeout = self.read_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (math.isfinite(timeout) and timeout > 0):
            raise ConfigurationError(f"read_timeout_s (--read-timeout) must be a finite number of seconds > 0, got {timeout!r}")
        port = self.metrics_port
        if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535):
            raise ConfigurationError(f"metrics_port (--metrics-port) must be a port from 0 to 65535, got {port!r}")
        object.__setattr__(self, "api_keys", tuple(_checked_key(k, i) for i, k in enumerate(self.api_keys)))

    def accepts_key(self, presented: str | None) -> bool:
        """True when no keys are configured or ``presented`` is one of them (constant time).

        Compared as bytes: ``hmac.compare_digest`` refuses ``str`` with non-ASCII characters
        (a TypeError, once a 500), and a header may carry any byte.
        """
        if not self.api_keys:
            return True
        if presented is None:
            return False
        import hmac

        given = presented.encode("utf-8", "surrogatepass")
        return any(hmac.compare_digest(given, k.get_secret_value().encode("ascii")) for k in self.api_keys)


def _checked_key(key: SecretStr | str, index: int) -> SecretStr:
    """The key stripped (clients cannot send surrounding blanks); one line of printable ASCII, or an
    error that names the key's position and never its value."""
    value = (key.get_secret_value() if isinstance(key, SecretStr) else str(key)).strip()
    if not value:
        raise ConfigurationError(f"api_keys[{index}] is empty")
    if not (value.isascii() and value.isprintable()):
        raise ConfigurationError(
            f"api_keys[{index}] must be one line of printable ASCII (a bearer token); the value is not shown"
        )
    return key if isinstance(key, SecretStr) and value == key.get_secret_value() else SecretStr(value)
