"""Addresses: ``HOST:PORT`` parsing and "does this only reach this machine?", for every caller.

>>> split_host_port("[::1]:9000"), split_host_port("127.0.0.1:0")
(('::1', 9000), ('127.0.0.1', 0))
>>> is_loopback("localhost"), is_loopback("10.0.0.1")
(True, False)
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

__all__ = ["is_loopback", "is_loopback_url", "split_host_port"]

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]*\]|[^:\[\]/]*):(\d{1,5})$")
_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def split_host_port(address: str) -> tuple[str, int] | None:
    """``"HOST:PORT"`` (``"[::1]:8080"`` for IPv6) -> ``(host, port)`` without brackets; None if malformed.

    The host may be empty (``":9000"``: every interface); the port is 0-65535 (0: any free port).
    """
    match = _HOST_PORT.match(address.strip())
    if not match or int(match.group(2)) > 65535:
        return None
    return match.group(1).strip("[]"), int(match.group(2))


def is_loopback(host: str) -> bool:
    """True for loopback names and addresses (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """True when ``url``'s host is a loopback one (a key is optional for such an endpoint)."""
    return is_loopback(urlsplit(url).hostname or "")
