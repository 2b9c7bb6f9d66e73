"""Secret references: ``env:NAME`` and ``file:PATH``, resolved into pydantic ``SecretStr``.

Secrets stay wrapped in ``SecretStr`` (its repr is ``'**********'``) until the moment a client
needs the raw value, so they never reach a repr, a log line or an error message. Every resolved
value is registered with :mod:`~agent_embeddings.redaction`, so that it is masked in any text.

* A key must be one line of printable ASCII (it travels in an HTTP header or gRPC metadata,
  where anything else is refused by the library *with the value in its error text*).
* ``file:`` names a regular file of at most 4 KiB, UTF-8 without a byte-order mark, one line
  (whitespace around it dropped); a FIFO, a device, a directory, ``/proc`` and ``/sys`` are refused.
* No error repeats a value: a key pasted where a reference belongs (``api_key_ref: "sk-..."``,
  ``"env:sk-..."``, ``"file:AIza..."``) is refused without being echoed.

>>> import os; os.environ["DEMO_KEY"] = "sk-demo"
>>> resolve_secret_ref("env:DEMO_KEY").get_secret_value()
'sk-demo'
>>> resolve_secret_ref("sk-proj-pasted-by-mistake")
Traceback (most recent call last):
...
agent_embeddings.errors.ConfigurationError: secret: a secret reference must be 'env:NAME' or 'file:PATH'; this one is neither (its value is not shown: it may be a key pasted in its place)
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, SecretStr

from .errors import ConfigurationError, UnusableSecretError
from .redaction import remember_secret

__all__ = [
    "MAX_SECRET_FILE_BYTES",
    "KeyField",
    "SecretHeaders",
    "SecretRef",
    "SecretStr",
    "check_key",
    "check_ref",
    "key_problem",
    "resolve_secret_ref",
]

MAX_SECRET_FILE_BYTES = 4096
_PRINTABLE_LINE = re.compile(r"[\x20-\x7e]+")  # fullmatch: "$" would let a final "\n" by
# Names shown in errors: the conventional shape of an environment variable. Anything else (a
# lower-case or dashed "name") might be a key pasted after "env:", and is not repeated.
_SHOWN_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PSEUDO_FILESYSTEMS = ("/proc/", "/sys/")


def key_problem(value: str) -> str | None:
    """Why ``value`` cannot be a key (it must be one line of printable ASCII), or None; never the value."""
    if not value:
        return "it is empty"
    if _PRINTABLE_LINE.fullmatch(value):
        return None
    if "\n" in value or "\r" in value:
        return "it holds a line break (a key is one line)"
    if any(ord(c) > 0x7E for c in value):
        return "it holds non-ASCII characters (a key is printable ASCII)"
    return "it holds control characters (a key is printable ASCII)"


def check_key(value: str, *, who: str, source: str) -> None:
    """Refuse a key that is not one line of printable ASCII, naming ``source`` (never the value)."""
    problem = key_problem(value)
    if problem is not None:
        raise UnusableSecretError(f"{who}: the key from {source} is not usable: {problem}; the value is not shown")


def check_ref(ref: str) -> str:
    """``ref`` if it looks like ``env:NAME`` or ``file:PATH``; the error never repeats it.

    The syntax check a spec does at load time (pydantic field validators call it); resolving
    happens when the generator is built.
    """
    kind, sep, target = ref.partition(":")
    if not sep or kind not in ("env", "file"):
        raise ValueError(
            "a secret reference must be 'env:NAME' or 'file:PATH'; this one is neither "
            "(its value is not shown: it may be a key pasted in its place)"
        )
    if not target.strip():
        raise ValueError(f"the secret reference '{kind}:' names no {'variable' if kind == 'env' else 'file'}")
    if kind == "env" and not _ENV_NAME.fullmatch(target):
        raise ValueError(
            "'env:' must be followed by an environment variable name (letters, digits, '_'); this one is not "
            "(it is not shown: it may be a key pasted in its place)"
        )
    return ref


def _usable_key(value: SecretStr) -> SecretStr:
    problem = key_problem(value.get_secret_value())
    if problem is not None:  # the HTTP library would refuse it later, with the key in its error text
        raise ValueError(f"not usable as a key: {problem}; the value is not shown")
    return value


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")


def _header_lines(headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"header name {name!r} is not an HTTP token (letters, digits, !#$%&'*+-.^_`|~)")
        if not _HEADER_VALUE.fullmatch(value.get_secret_value()):
            raise ValueError(f"the value of header {name!r} is not one line of printable ASCII; it is not shown")
    return headers


# Field types of backends' parameter models (pydantic), checked when a spec loads:
#: ``env:NAME`` or ``file:PATH``, its shape only (resolved when the generator is built)
SecretRef = Annotated[str, AfterValidator(check_ref)]
#: a literal key: one line of printable ASCII
KeyField = Annotated[SecretStr, AfterValidator(_usable_key)]
#: HTTP headers whose values are secrets (any header may carry one): names are tokens, values one line
SecretHeaders = Annotated[dict[str, SecretStr], AfterValidator(_header_lines)]


def resolve_secret_ref(ref: str, *, who: str = "secret") -> SecretStr:
    """Resolve ``env:NAME`` or ``file:PATH`` into a checked key (whitespace around it is dropped)."""
    try:
        check_ref(ref)
    except ValueError as exc:
        raise ConfigurationError(f"{who}: {exc}") from None
    kind, _, target = ref.partition(":")
    if kind == "env":
        name = target if _SHOWN_ENV_NAME.fullmatch(target) else "(name not shown)"
        value = os.environ.get(target, "").strip()
        if not value:
            raise ConfigurationError(f"{who}: environment variable {name} is not set or empty")
        source = f"environment variable {name}"
    else:
        value, source = _read_secret_file(target, who=who)
    check_key(value, who=who, source=source)
    remember_secret(value)
    return SecretStr(value)


def _shown_path(target: str) -> str:
    # A path that does not exist is named only when it looks like one: "file:AIza..." is a key.
    return repr(target) if target.startswith(("/", "~", "./", "../")) else "(a relative path, not shown)"


def _read_secret_file(target: str, *, who: str) -> tuple[str, str]:
    """The one line of a small regular text file, and how to name it in errors."""
    path = Path(target).expanduser()
    shown = str(path)
    real = os.path.realpath(path)
    if real.startswith(_PSEUDO_FILESYSTEMS) or real in ("/proc", "/sys"):
        raise UnusableSecretError(f"{who}: secret file {shown!r} is a kernel pseudo-file ({real}), not a key file")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigurationError(f"{who}: secret file {_shown_path(target)} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"{who}: cannot open secret file {shown!r}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnusableSecretError(f"{who}: secret file {shown!r} is not a regular file ({_kind(info.st_mode)})")
        if info.st_size > MAX_SECRET_FILE_BYTES:
            raise UnusableSecretError(
                f"{who}: secret file {shown!r} is {info.st_size} bytes; a key file holds one line "
                f"of at most {MAX_SECRET_FILE_BYTES} bytes"
            )
        data = os.read(fd, MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"{who}: cannot read secret file {shown!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE_BYTES:  # a file that grew, or reports no size
        raise UnusableSecretError(f"{who}: secret file {shown!r} is over {MAX_SECRET_FILE_BYTES} bytes")
    if data.startswith(b"\xef\xbb\xbf"):
        raise UnusableSecretError(f"{who}: secret file {shown!r} starts with a byte-order mark; save it without one")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnusableSecretError(f"{who}: secret file {shown!r} is not UTF-8 text (a binary file?)") from None
    value = text.strip()
    if not value:
        raise ConfigurationError(f"{who}: secret file {shown!r} is empty")
    return value, f"secret file {shown!r}"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"
