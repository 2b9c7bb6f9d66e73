"""The documented import path of the public classes (as in the client documentation).

>>> from agent_embeddings.generator import AbstractEmbeddingGenerator, EmbeddingGeneratorManager

The base class lives in :mod:`agent_embeddings.base`, the result types in
:mod:`agent_embeddings.results`; nothing inside the package imports this module. The backend
classes (``OpenAIEmbeddingGenerator``, ``HuggingFaceEmbeddingGenerator``, ``AIOSEmbeddingGenerator``
and its documented name ``AIOSEmbeddings``) resolve on first access, through the package's own
lazy exports; their list is :data:`agent_embeddings.backends.BUILTIN_BACKENDS`.
"""

from __future__ import annotations

from typing import Any

import agent_embeddings

from .backends import PUBLIC_CLASSES
from .base import AbstractEmbeddingGenerator
from .factory import build_embeddings_from_model_item
from .manager import EmbeddingGeneratorManager
from .results import BackendResult, Embeddings, Usage

__all__ = [
    *PUBLIC_CLASSES,
    "AbstractEmbeddingGenerator",
    "BackendResult",
    "EmbeddingGeneratorManager",
    "Embeddings",
    "Usage",
    "build_embeddings_from_model_item",
]

_BACKEND_CLASSES = tuple(PUBLIC_CLASSES)


def __getattr__(name: str) -> Any:
    if name in _BACKEND_CLASSES:
        return getattr(agent_embeddings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BACKEND_CLASSES))
