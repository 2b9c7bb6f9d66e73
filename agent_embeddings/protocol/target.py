"""gRPC targets (``dns:///h:p``, ``h:p``, ``unix:``, ``ipv4:a:p,b:p``) and the client channel settings.

The channel settings live here so that every AIOS client channel behaves the same: round-robin
across resolved addresses, gRPC's own retry of UNAVAILABLE, keepalive that a server with
default settings accepts, and message limits the client does not impose itself (the server
announces its own; the client sizes batches to fit).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from ..errors import ConfigurationError
from ..net import is_loopback, split_host_port
from . import SERVICE_NAME

__all__ = ["REPLICA_GONE_CODES", "ParsedTarget", "channel_options", "parse_target", "service_config"]

_SCHEMES = ("dns", "unix", "unix-abstract", "ipv4", "ipv6", "vsock")


@dataclass(frozen=True)
class ParsedTarget:
    """A validated target: what to pass to grpc and whether it only reaches this machine."""

    target: str
    scheme: str
    hosts: tuple[str, ...]

    @property
    def is_local(self) -> bool:
        """True for unix sockets and loopback addresses: plain text is safe there."""
        if self.scheme in ("unix", "unix-abstract"):
            return True
        return bool(self.hosts) and all(is_loopback(h) for h in self.hosts)


def _split_hostport(text: str, *, original: str) -> str:
    parsed = split_host_port(text)
    if parsed is None or not parsed[0] or parsed[1] == 0:
        raise ConfigurationError(
            f"grpc_url {original!r}: expected HOST:PORT in {text!r} (e.g. 'localhost:9000', '[::1]:9000')"
        )
    return text.rpartition(":")[0]


def parse_target(url: str) -> ParsedTarget:
    """Check a ``grpc_url`` and tell which hosts it names; raise ConfigurationError with the fix."""
    url = url.strip()
    if not url:
        raise ConfigurationError("grpc_url is empty; expected e.g. 'dns:///embeddings.example.com:9000'")
    if "://" in url and not url.startswith("dns:"):
        scheme = url.split("://", 1)[0]
        raise ConfigurationError(
            f"grpc_url {url!r}: {scheme}:// is not a gRPC target; use 'host:port', 'dns:///host:port', "
            f"'unix:/path' or 'ipv4:a:port,b:port' (TLS is chosen by the tls/plaintext options)"
        )
    scheme, sep, rest = url.partition(":")
    if sep and scheme in _SCHEMES:
        if scheme in ("unix", "unix-abstract", "vsock"):
            if not rest.strip("/"):
                raise ConfigurationError(f"grpc_url {url!r}: names no socket")
            return ParsedTarget(url, scheme, ())
        if scheme == "dns":
            # dns:[//authority/]host[:port]
            body = rest[2:].split("/", 1)[1] if rest.startswith("//") else rest
            host = _split_hostport(body, original=url) if ":" in body.replace("::", "") else body
            if not host:
                raise ConfigurationError(f"grpc_url {url!r}: names no host")
            return ParsedTarget(url, scheme, (host,))
        hosts = tuple(_split_hostport(part.strip(), original=url) for part in rest.split(",") if part.strip())
        if not hosts:
            raise ConfigurationError(f"grpc_url {url!r}: lists no address")
        for host in hosts:
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                raise ConfigurationError(
                    f"grpc_url {url!r}: {host!r} is not an IP address; {scheme}: takes addresses, "
                    f"use 'dns:///{host}:PORT' for names"
                ) from None
        return ParsedTarget(url, scheme, hosts)
    host = _split_hostport(url, original=url)
    return ParsedTarget(url, "dns", (host,))


# A replica that goes away fails the calls it holds with UNAVAILABLE (connection lost) or
# CANCELLED (a server stopping past its grace period cancels in-flight calls before any answer).
# Embed and Info are pure functions of their request, so sending them again is safe.
REPLICA_GONE_CODES = ("UNAVAILABLE", "CANCELLED")


def service_config(
    *,
    max_attempts: int = 5,
    initial_backoff_s: float = 0.05,
    max_backoff_s: float = 1.0,
    multiplier: float = 2.0,
    codes: tuple[str, ...] = REPLICA_GONE_CODES,
) -> str:
    """Round-robin across addresses and retry a replica going away (:data:`REPLICA_GONE_CODES`) with backoff.

    Retries stay within the call's deadline, so ``timeout_s`` still bounds every call. A spec's
    ``retry`` policy sets the attempts (gRPC caps them at 5) and backoff, and adds
    RESOURCE_EXHAUSTED (a busy server) to the retried codes; ``max_attempts=1`` retries nothing.
    """
    method: dict[str, object] = {"name": [{"service": SERVICE_NAME}]}
    if max_attempts > 1:
        method["retryPolicy"] = {
            "maxAttempts": min(5, max_attempts),
            "initialBackoff": f"{max(initial_backoff_s, 0.001):.3f}s",
            "maxBackoff": f"{max(max_backoff_s, initial_backoff_s, 0.001):.3f}s",
            "backoffMultiplier": multiplier,
            "retryableStatusCodes": list(codes),
        }
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [method]})


def channel_options(
    *, authority: str | None = None, max_attempts: int = 5, retry: object | None = None
) -> list[tuple[str, object]]:
    """Options of every AIOS client channel (``retry``: a :class:`~agent_embeddings.retry.RetryPolicy`)."""
    if retry is not None:
        config = service_config(
            max_attempts=retry.attempts,  # type: ignore[attr-defined]
            initial_backoff_s=retry.initial_backoff_s,  # type: ignore[attr-defined]
            max_backoff_s=retry.max_backoff_s,  # type: ignore[attr-defined]
            multiplier=retry.multiplier,  # type: ignore[attr-defined]
            codes=(*REPLICA_GONE_CODES, "RESOURCE_EXHAUSTED"),
        )
    else:
        config = service_config(max_attempts=max_attempts)
    options: list[tuple[str, object]] = [
        ("grpc.service_config", config),
        ("grpc.enable_retries", 1),
        # A server with default settings tolerates pings every 5 minutes at most, and only
        # while calls are active; pinging more often gets the connection closed (too_many_pings).
        ("grpc.keepalive_time_ms", 300_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        # The server enforces its own limits and announces them; the client does not cap them.
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
        # Reconnect soon after a replica comes back instead of waiting for long backoffs.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
        ("grpc.primary_user_agent", "agent-embeddings-aios"),
    ]
    if authority:
        options.append(("grpc.ssl_target_name_override", authority))
        options.append(("grpc.default_authority", authority))
    return options
