"""The client documentation's way to write a generator, adapted to the one the package uses.

The documentation's custom generator overrides ``generate(text)`` and/or ``generate_batch(texts)``;
the package's backends implement ``_embed_batch(texts)``. When a subclass is created (see
``AbstractEmbeddingGenerator.__init_subclass__``), :func:`adapt` gives a documentation-style
class an ``_embed_batch`` calling its own methods, so that the manager, the cache, retries and
the contract checks treat it as any backend, and the base class holds no branch for it.

>>> from agent_embeddings.base import AbstractEmbeddingGenerator
>>> class Doc(AbstractEmbeddingGenerator):
...     def generate(self, text):
...         return [float(len(text)), 1.0]
>>> Doc().encode(["abc"]).tolist()
[[3.0, 1.0]]
"""

from __future__ import annotations

from typing import Any

from .results import RawBatch

__all__ = ["adapt"]


def _via_generate_batch(self: Any, texts: list[str]) -> RawBatch:
    result: RawBatch = self.generate_batch(texts)
    return result


def _via_generate(self: Any, texts: list[str]) -> RawBatch:
    return [self.generate(t) for t in texts]


_ADAPTERS = (_via_generate_batch, _via_generate)


def adapt(cls: type, base: type) -> None:
    """Install the adapter ``cls`` needs: none when it implements ``_embed_batch`` itself, else one
    calling its ``generate_batch`` (preferred) or its ``generate``."""
    own = cls._embed_batch  # type: ignore[attr-defined]
    if own is not base._embed_batch and own not in _ADAPTERS:  # type: ignore[attr-defined]
        return  # implements the contract (or inherits an implementation)
    if cls.generate_batch is not base.generate_batch:  # type: ignore[attr-defined]
        cls._embed_batch = _via_generate_batch  # type: ignore[attr-defined]
    elif cls.generate is not base.generate:  # type: ignore[attr-defined]
        cls._embed_batch = _via_generate  # type: ignore[attr-defined]
