"""Secrets never leave in text: the one place that knows what a secret looks like.

* :func:`remember_secret` registers a value (every resolved ``api_key_ref``, every literal key,
  password and query value of a URL, header value of a spec) so that :func:`redact` replaces it
  *whole* wherever it appears — also in the shapes libraries print it in: a ``repr`` (``\\n``
  escaped, bytes reprs ``b'Bearer …'``, reprs of reprs), JSON strings, URL-encoded, and for URL
  credentials the base64 of ``user:password`` that HTTP Basic auth sends.
* :func:`redact` also replaces key-shaped text (``sk-...``, ``Bearer ...``, ``api_key=...``) and
  the credentials of any ``scheme://user:password@`` URL, registered or not.
* :func:`display_url` is how a URL is shown anywhere (messages, ``describe()``, reprs,
  manifests): user info and query values masked, names kept.
* :func:`redact_params` is how parameters are shown: values of fields named like secrets
  (``api_key``, ``token``, ``password``...), of header mappings (``default_headers``: any
  header may carry a secret, ``X-Session`` as much as ``Authorization``) masked; URLs displayed.

Values shorter than 6 characters are not registered: masking them everywhere would hide
ordinary words, and they are not secrets worth the name. Registering is rare (spec load,
key resolution), redacting frequent (every log record): the registry keeps one compiled
alternation, longest first, rebuilt on registration.

>>> redact_params({"api_key": "sk-live-123456", "base_url": "http://u:pw@x/v1?key=abc", "api_key_ref": "env:K"})
{'api_key': '**********', 'base_url': 'http://**********@x/v1?key=**********', 'api_key_ref': 'env:K'}
>>> remember_secret("line-one\\nline-two"); redact("Illegal header value b'Bearer line-one\\\\nline-two'")
"Illegal header value b'Bearer **********'"
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "display_url",
    "is_secret_name",
    "redact",
    "redact_params",
    "remember_params",
    "remember_secret",
    "remember_url",
]

MASK = "**********"
MIN_SECRET_LENGTH = 6

# A field whose value is a secret; ``*_ref`` fields name where a secret is (env:NAME), not the secret.
# "token" only as a word of the name: max_tokens_per_input and tokenizer are not secrets.
_SECRET_NAME = re.compile(
    r"(?i)(api[_-]?key|(?<![a-z])token(?![a-z])|password|passwd|secret|authorization|credential|private[_-]?key"
    r"|bearer|cookie)"
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# Key-shaped text, each with the words (in the lower-cased text) one of which must be there for
# its regex to run. ``name: value`` without quotes is masked only when the value holds a digit:
# "secret: the file..." is prose, "token: 9f2c..." is not.
_KEY_PATTERNS = (
    (("sk-",), re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "sk-" + MASK),  # OpenAI-style keys
    (("bearer",), re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + MASK),  # Authorization values
    (
        ("key", "token", "password", "secret"),
        re.compile(
            r"(?i)\b(api[_-]?key|token|password|secret)"
            r"(=\s*\"?|\"?\s*[:=]\s*\"|\"?\s*:\s*(?=[^\s\"',;&]*\d))[^\s\"',;&]{6,}"
        ),
        r"\1\2" + MASK,
    ),
    # credentials of any URL in any text: scheme://user:password@host
    (("@",), re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@'\"]+@"), r"\1" + MASK + "@"),
)
# Characters no printing of a string escapes (repr, JSON, URL-encoding): the longest run of them in
# a secret is in each of its shapes, a cheap test before the alternation of every shape runs.
_UNESCAPED_RUN = re.compile(r"[A-Za-z0-9_.~\-]+")

# Query parameters that are never secrets (Azure's api-version): masking their values in every
# log line would hide dates, nothing else.
_PLAIN_QUERY_NAMES = frozenset({"api-version", "api_version", "version"})

_lock = threading.Lock()
_forms: set[str] = set()
# Swapped whole on registration, read without the lock: (needles, alternation of every shape).
_registry: tuple[tuple[str, ...], re.Pattern[str] | None] = ((), None)


def _reprs(text: str) -> set[str]:
    """What ``repr()`` makes of ``text`` inside a longer string, for either quote that string gets."""
    shown = {repr(text + "'\"")[1:-4]}  # quoted with ', which is escaped
    if '"' not in text:
        shown.add(repr(text + "'")[1:-2])  # quoted with ", nothing escaped but \\ and controls
    return shown


def _byte_reprs(data: bytes) -> set[str]:
    shown = {repr(data + b"'\"")[2:-4]}
    if b'"' not in data:
        shown.add(repr(data + b"'")[2:-2])
    return shown


def _shapes(value: str) -> set[str]:
    """``value`` as libraries print it: raw, in a str or bytes repr (``b'Bearer …'``), in a repr of
    such a repr (an exception quoting a header), JSON-escaped, URL-encoded."""
    first = {value, *_reprs(value), *_byte_reprs(value.encode("utf-8", "surrogatepass"))}
    shapes = first | {shown for text in first for shown in _reprs(text)}
    shapes |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    shapes |= {quote(value, safe=""), quote_plus(value)}
    return {s for s in shapes if len(s) >= MIN_SECRET_LENGTH}


def remember_secret(value: str) -> None:
    """Have :func:`redact` replace this exact value, in every shape it is printed in, wherever it appears."""
    global _registry
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    shapes = _shapes(value)
    needle = max(_UNESCAPED_RUN.findall(value), key=len, default="")
    with _lock:
        needles = _registry[0]
        if shapes <= _forms:
            return
        _forms.update(shapes)
        if needle not in needles or len(needle) < 4:
            # a run too short to be a useful test: every shape is its own
            needles = (*needles, needle) if len(needle) >= 4 else (*needles, *sorted(shapes - set(needles)))
        ordered = sorted(_forms, key=len, reverse=True)  # a longer secret wins over one it contains
        _registry = (needles, re.compile("|".join(map(re.escape, ordered))))


def _remember_header_value(value: str) -> None:
    remember_secret(value)
    scheme, _, credential = value.strip().partition(" ")
    if credential and scheme.isalpha():  # "Bearer <token>", "Basic <b64>": the credential alone too
        remember_secret(credential.strip())


def remember_url(url: str) -> None:
    """Register a URL's user name, password and query values (and the Basic auth header made from them)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    raw_user, _, raw_password = parts.netloc.rpartition("@")[0].partition(":")
    for raw in (raw_user, raw_password):
        remember_secret(raw)
        remember_secret(unquote(raw))
    if raw_user or raw_password:
        for user, password in ((raw_user, raw_password), (unquote(raw_user), unquote(raw_password))):
            remember_secret(base64.b64encode(f"{user}:{password}".encode()).decode())
    for text in (parts.query, parts.fragment):
        for pair in text.split("&"):
            name, _, raw_value = pair.partition("=")
            if name.lower() in _PLAIN_QUERY_NAMES:  # shown masked in a URL, but not hunted in all text
                continue
            remember_secret(raw_value)
            remember_secret(unquote(raw_value.replace("+", " ")))


def redact(text: str) -> str:
    """``text`` with registered secrets, key-shaped strings and URL credentials replaced by ``**********``.

    Cheap when there is nothing to hide (it runs on every log record): substring tests first,
    a regex only where one of them hits.
    """
    needles, pattern = _registry
    if pattern is not None:
        for needle in needles:
            if needle in text:
                text = pattern.sub(MASK, text)
                break
    lowered = text.lower()
    for hints, key_pattern, replacement in _KEY_PATTERNS:
        for hint in hints:
            if hint in lowered:
                text = key_pattern.sub(replacement, text)
                break
    return text


def display_url(url: str) -> str:
    """How a URL is shown anywhere: user info and query values masked, names kept.

    >>> display_url("https://user:pw@api.example.com:8443/v1?api-version=2&sig=abc")
    'https://**********@api.example.com:8443/v1?api-version=**********&sig=**********'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}={MASK if value else ''}" for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    fragment = MASK if parts.fragment else ""
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, fragment)))


def is_secret_name(name: object) -> bool:
    """True for a field named like a secret (``api_key``, ``token``, ``Authorization``...), not ``*_ref``."""
    text = str(name)
    return bool(_SECRET_NAME.search(text)) and not text.lower().endswith("_ref")


def _is_headers(name: object) -> bool:
    return "header" in str(name).lower()


def redact_params(value: Any) -> Any:
    """A copy of ``value`` (nested mappings and lists) fit to show: secret-named values and header
    values masked, URLs through :func:`display_url`, other strings through :func:`redact`."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if v is None:
                out[k] = None
            elif is_secret_name(k):
                out[k] = MASK
            elif _is_headers(k) and isinstance(v, Mapping):
                out[k] = {name: MASK for name in v}  # header names may stay, values never
            elif str(k).lower().endswith("_ref") and isinstance(v, str) and not v.startswith(("env:", "file:")):
                out[k] = MASK  # not a reference: maybe a key pasted in its place
            else:
                out[k] = redact_params(v)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(redact_params(v) for v in value)
    if isinstance(value, str):
        return display_url(value) if _URL.match(value) else redact(value)
    return value


def remember_params(value: Any) -> None:
    """Register every secret of a parameter mapping: values of secret-named fields, header values,
    credentials and query values of URLs (nested mappings and lists included)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if is_secret_name(k) and isinstance(v, str):
                _remember_header_value(v)
            elif _is_headers(k) and isinstance(v, Mapping):
                for header in v.values():
                    if isinstance(header, str):
                        _remember_header_value(header)
            else:
                remember_params(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            remember_params(v)
    elif isinstance(value, str) and _URL.match(value):
        remember_url(value)
