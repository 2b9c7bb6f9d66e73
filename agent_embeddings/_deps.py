"""Import an optional dependency, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ConfigurationError


def require(module: str, extra: str, *, who: str = "agent-embeddings") -> ModuleType:
    """``require("sentence_transformers", "hf")`` -> the module, or a ConfigurationError with the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"{who} needs the '{extra}' extra ({module} is not installed): pip install 'agent-embeddings[{extra}]'"
        ) from exc
