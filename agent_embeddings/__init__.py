"""agent-embeddings: one way for AI agents to get embeddings from any backend.

>>> from agent_embeddings import EmbeddingGeneratorManager
>>> manager = EmbeddingGeneratorManager.from_subject_spec("specs/default.json")  # doctest: +SKIP
>>> manager.generate("hf", "What is AI?")[:3]                                    # doctest: +SKIP

Importing this package is cheap: torch, grpc, openai and fastapi load only when a backend or
server that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .backends import PUBLIC_CLASSES
from .base import AbstractEmbeddingGenerator
from .errors import (
    AgentEmbeddingsError,
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    ConfigurationError,
    DimensionMismatchError,
    EmbeddingContractError,
    InvalidInputError,
    InvalidInputTypeError,
    ModelNotFoundError,
    PluginError,
    RateLimitError,
    RemoteNotFoundError,
    SpecError,
    UnknownBackendError,
    UnknownGeneratorError,
    UnusableSecretError,
)
from .factory import build_embeddings_from_model_item
from .hookspecs import hookimpl
from .manager import EmbeddingGeneratorManager
from .observability import install_log_redaction
from .results import BackendResult, Embeddings, GeneratorInfo
from .specs import GeneratorParams, ModelItem, SubjectSpec, load_spec
from .version import __version__

# Every log record, of every logger, has known secrets, key-shaped text and URL credentials redacted.
install_log_redaction()

__all__ = [
    *PUBLIC_CLASSES,  # the built-in backends' classes, resolved lazily (below)
    "__version__",
    "AbstractEmbeddingGenerator",
    "AgentEmbeddingsError",
    "AuthenticationError",
    "BackendError",
    "BackendResult",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BadRequestError",
    "ConfigurationError",
    "DimensionMismatchError",
    "EmbeddingContractError",
    "EmbeddingGeneratorManager",
    "Embeddings",
    "GeneratorInfo",
    "GeneratorParams",
    "InvalidInputError",
    "InvalidInputTypeError",
    "ModelItem",
    "ModelNotFoundError",
    "PluginError",
    "RateLimitError",
    "RemoteNotFoundError",
    "SpecError",
    "SubjectSpec",
    "UnknownBackendError",
    "UnknownGeneratorError",
    "UnusableSecretError",
    "build_embeddings_from_model_item",
    "hookimpl",
    "load_spec",
]

# Backend classes resolve on first access (their modules are light, but keep the door shut).
_LAZY = PUBLIC_CLASSES


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
