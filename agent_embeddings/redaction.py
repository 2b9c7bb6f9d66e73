"""Secrets never leave in text: the one place that knows what a secret looks like.

* :func:`remember_secret` records a value (every resolved ``api_key_ref``, every literal key
  of a spec) so that :func:`redact` removes it from any text, whatever its shape.
* :func:`redact` also replaces key-shaped text (``sk-...``, ``Bearer ...``, ``api_key=...``).
* :func:`is_secret_name` / :func:`redact_params` hide the values of fields named like secrets
  (``api_key``, ``token``, ``password``, ``secret``, ``authorization``, ...) in reprs and errors.

>>> redact_params({"api_key": "sk-live-123456", "base_url": "http://x", "api_key_ref": "env:K"})
{'api_key': '**********', 'base_url': 'http://x', 'api_key_ref': 'env:K'}
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "is_secret_name", "redact", "redact_params", "remember_secret"]

MASK = "**********"

# A field whose value is a secret; ``*_ref`` fields name where a secret is (env:NAME), not the secret.
_SECRET_NAME = re.compile(
    r"(?i)(api[_-]?key|token|password|passwd|secret|authorization|credential|private[_-]?key|bearer|cookie)"
)
_KEY_PATTERNS = (
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "sk-" + MASK),  # OpenAI-style keys
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + MASK),  # Authorization header values
    (re.compile(r"(?i)\b(api[_-]?key|token|password|secret)(\"?\s*[:=]\s*\"?)[^\s\"',;]{6,}"), r"\1\2" + MASK),
)
_known: set[str] = set()
_known_lock = threading.Lock()


def remember_secret(value: str) -> None:
    """Have :func:`redact` remove this exact value wherever it appears."""
    if value and len(value) >= 6:
        with _known_lock:
            _known.add(value)


def redact(text: str) -> str:
    """``text`` with known secrets and key-shaped strings replaced by ``**********``."""
    for secret in list(_known):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _KEY_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def is_secret_name(name: object) -> bool:
    """True for a field named like a secret (``api_key``, ``token``, ``Authorization``...), not ``*_ref``."""
    text = str(name)
    return bool(_SECRET_NAME.search(text)) and not text.lower().endswith("_ref")


def redact_params(value: Any) -> Any:
    """A copy of ``value`` (nested mappings and lists) with the values of secret-named keys masked."""
    if isinstance(value, Mapping):
        return {k: (MASK if is_secret_name(k) and v is not None else redact_params(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_params(v) for v in value)
    if isinstance(value, str):
        return redact(value)
    return value


def remember_params(value: Any) -> None:
    """Remember every string under a secret-named key (a literal key in a spec), nested ones included."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if is_secret_name(k) and isinstance(v, str):
                remember_secret(v)
                remember_secret(v.partition(" ")[2].strip())  # "Bearer <token>": the token alone too
            else:
                remember_params(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            remember_params(v)
