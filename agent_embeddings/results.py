"""Result and record types shared by every layer (a leaf module: it imports nothing of ours).

>>> Embeddings(np.zeros((2, 3), np.float32), prompt_tokens=4).tolist()
[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    from .base import AbstractEmbeddingGenerator
    from .space import SpaceIdentity

__all__ = ["BackendResult", "Embeddings", "GeneratorInfo", "RawBatch", "Usage"]


@dataclass(frozen=True)
class BackendResult:
    """What ``_embed_batch`` may return when it knows more than the vectors.

    ``token_counts`` (one per text) lets micro-batching give each caller its own usage.
    """

    vectors: Any
    prompt_tokens: int | None = None
    token_counts: Sequence[int] | None = None


#: What a backend's ``_embed_batch`` returns: a matrix, rows of floats, or a BackendResult.
RawBatch = Union[np.ndarray, Sequence[Sequence[float]], BackendResult]


@dataclass(frozen=True)
class Embeddings:
    """Vectors for a batch of texts (float32, one row per text) and what produced them.

    ``generator`` names the generator that produced them (a fallback's name when the primary
    failed; ``fallback_from`` then names the primary). ``prompt_tokens`` counts the tokens the
    backend processed: texts answered from the cache (``cache_hits``) cost none.
    """

    vectors: np.ndarray
    prompt_tokens: int | None = None
    generator: str | None = None
    cache_hits: int = 0
    fallback_from: str | None = None

    def tolist(self) -> list[list[float]]:
        rows: list[list[float]] = self.vectors.tolist()
        return rows


@dataclass
class Usage:
    """Running totals of a generator's backend calls (thread-safe)."""

    calls: int = 0
    texts: int = 0
    prompt_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, texts: int, prompt_tokens: int | None) -> None:
        with self._lock:
            self.calls += 1
            self.texts += texts
            self.prompt_tokens += prompt_tokens or 0


@dataclass(frozen=True)
class GeneratorInfo:
    """The serving view of one generator: a :meth:`EmbeddingGeneratorManager.list_generators` row,
    what ``GET /v1/models`` and gRPC ``Info`` publish. Built by :meth:`of`, from the generator."""

    name: str
    aliases: tuple[str, ...]
    provider: str
    model: str | None
    #: the width of the vectors the generator returns (its declared ``dims``, its ``dimensions``
    #: truncation, or as loaded or seen), when known without calling it
    width: int | None
    normalize: bool
    block_id: str | None = None
    #: the embedding space, once known (a local model loaded, an endpoint asked); servers publish it
    space: SpaceIdentity | None = None

    @property
    def dims(self) -> int | None:
        """:attr:`width`, by the name the cards and the wire give it."""
        return self.width

    @classmethod
    def of(
        cls, generator: AbstractEmbeddingGenerator, *, name: str, aliases: Sequence[str] = (),
        block_id: str | None = None,
    ) -> GeneratorInfo:
        """What ``generator`` tells of itself now, under the manager's ``name`` and ``aliases``
        (never loading a model or calling an endpoint)."""
        return cls(
            name=name, aliases=tuple(aliases), provider=str(generator.provider), model=generator.shown_model,
            width=generator.output_dims, normalize=bool(generator.normalize), block_id=block_id,
            space=generator.known_space(),
        )
