"""Secret references: ``env:NAME`` and ``file:PATH``, resolved into pydantic ``SecretStr``.

Secrets stay wrapped in ``SecretStr`` (its repr is ``'**********'``) until the moment a client
needs the raw value, so they never reach a repr, a log line or an error message.

>>> import os; os.environ["DEMO_KEY"] = "sk-demo"
>>> resolve_secret_ref("env:DEMO_KEY").get_secret_value()
'sk-demo'
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from .errors import ConfigurationError
from .redaction import remember_secret

__all__ = ["SecretStr", "resolve_secret_ref"]


def resolve_secret_ref(ref: str, *, who: str = "secret") -> SecretStr:
    """Resolve ``env:NAME`` or ``file:PATH`` (whitespace around a file's content is dropped)."""
    kind, sep, target = ref.partition(":")
    if not sep or kind not in ("env", "file") or not target:
        raise ConfigurationError(f"{who}: secret reference {ref!r} must look like 'env:NAME' or 'file:PATH'")
    if kind == "env":
        value = os.environ.get(target)
        if not value:
            raise ConfigurationError(f"{who}: environment variable {target} (from {ref!r}) is not set")
        remember_secret(value)
        return SecretStr(value)
    path = Path(target).expanduser()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"{who}: cannot read secret file {str(path)!r}: {exc.strerror}") from None
    if not value:
        raise ConfigurationError(f"{who}: secret file {str(path)!r} is empty")
    remember_secret(value)
    return SecretStr(value)
