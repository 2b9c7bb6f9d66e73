"""Import an optional dependency, or say which extra installs it; or ask whether one is there."""

from __future__ import annotations

import importlib
import importlib.util
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


#: the modules of the ``onnx`` extra (ONNX Runtime and the exporter's ``onnx``)
ONNX_MODULES = ("onnxruntime", "onnx")


def installed(*modules: str) -> bool:
    """Whether every one of ``modules`` is importable, found without importing it:
    ``installed(*ONNX_MODULES)`` is the ``onnx`` extra."""
    return all(importlib.util.find_spec(module) is not None for module in modules)
