"""The generator base class, and the documented import path for the public classes.

A backend implements one method, ``_embed_batch(texts) -> matrix``; this class supplies
single and batch calls, splitting into chunks, the dims contract, normalization and async.

>>> from agent_embeddings.generator import AbstractEmbeddingGenerator
>>> class Lengths(AbstractEmbeddingGenerator):
...     provider = "example"
...     def _embed_batch(self, texts):
...         return [[len(t), 1.0] for t in texts]
>>> Lengths(normalize=False).generate_batch(["ab", "abcd"])
[[2.0, 1.0], [4.0, 1.0]]

``OpenAIEmbeddingGenerator``, ``HuggingFaceEmbeddingGenerator``, ``AIOSEmbeddings``,
``EmbeddingGeneratorManager`` and ``build_embeddings_from_model_item`` are importable from
here too (as in the client documentation); they are loaded on first access so that importing
this module stays cheap.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Union

import numpy as np

from .batching import MicroBatcher, MicroBatching
from .specs import GeneratorParams, ModelItem, parse_params
from .vectors import as_matrix, check_dims, check_text, check_texts, l2_normalize, truncate

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "AIOSEmbeddings",
    "AbstractEmbeddingGenerator",
    "BackendResult",
    "EmbeddingGeneratorManager",
    "Embeddings",
    "HuggingFaceEmbeddingGenerator",
    "OpenAIEmbeddingGenerator",
    "Usage",
    "build_embeddings_from_model_item",
]


@dataclass(frozen=True)
class BackendResult:
    """What ``_embed_batch`` may return when it knows more than the vectors.

    ``token_counts`` (one per text) lets micro-batching give each caller its own usage.
    """

    vectors: Any
    prompt_tokens: int | None = None
    token_counts: Sequence[int] | None = None


RawBatch = Union[np.ndarray, Sequence[Sequence[float]], BackendResult]


@dataclass(frozen=True)
class Embeddings:
    """Vectors for a batch of texts (float32, one row per text) and what produced them."""

    vectors: np.ndarray
    prompt_tokens: int | None = None
    generator: str | None = None

    def tolist(self) -> list[list[float]]:
        return self.vectors.tolist()


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


class AbstractEmbeddingGenerator:
    """Base class of every embedding generator.

    Subclasses implement ``_embed_batch``. A subclass written as in the client documentation
    (overriding ``generate``/``generate_batch`` and calling ``super().__init__()``) works too:
    its methods become the backend call, and the manager applies the same contract checks.
    """

    #: Short backend name shown in listings, e.g. ``"hf"``.
    provider: ClassVar[str] = "custom"
    #: The backend's ``llm_parameters`` model.
    Params: ClassVar[type[GeneratorParams]] = GeneratorParams
    #: Hard limit of texts per backend call (None: no limit beyond ``batch_size``).
    max_batch_size: ClassVar[int | None] = None
    #: Whether concurrent small calls are coalesced unless the spec says otherwise: on for
    #: local models (one big forward pass beats many small ones), off for remote backends
    #: (their servers batch) and custom generators.
    micro_batching_default: ClassVar[bool] = False

    def __init__(
        self,
        *,
        dims: int | None = None,
        normalize: bool = False,
        batch_size: int = 32,
        dimensions: int | None = None,
        model: str | None = None,
        name: str | None = None,
        micro_batching: MicroBatching | Mapping[str, Any] | bool | None = None,
    ) -> None:
        self.dims = dims
        self.normalize = normalize
        self.batch_size = batch_size
        self.dimensions = dimensions
        self.model = model
        self.name = name
        self.usage = Usage()
        self._observed_dims: int | None = None
        self.micro_batching = _micro_batching(micro_batching, type(self).micro_batching_default)
        self._batcher: MicroBatcher | None = None
        self._batcher_lock = threading.Lock()
        if dims is not None and dimensions is not None and dims != dimensions:
            from .errors import SpecError

            raise SpecError(f"{self._who()}: dims={dims} contradicts dimensions={dimensions}; give one of them")
        cls = type(self)
        base = AbstractEmbeddingGenerator
        if (
            cls._embed_batch is base._embed_batch
            and cls.generate_batch is base.generate_batch
            and cls.generate is base.generate
        ):
            raise TypeError(f"{cls.__name__} must implement _embed_batch(texts) (or generate_batch/generate)")

    # -- construction from a spec -------------------------------------------------------
    @classmethod
    def from_model_item(cls, item: ModelItem) -> Self:
        """Build from a spec item; ``llm_parameters`` are validated by ``cls.Params``."""
        params = parse_params(cls.Params, item)
        generator = cls.from_params(item, params)
        if getattr(params, "micro_batching", None) is not None:
            generator.micro_batching = params.micro_batching
        return generator

    @classmethod
    def from_params(cls, item: ModelItem, params: Any) -> Self:
        """Build from validated parameters; backends whose constructor differs override this."""
        return cls(model=item.model, **params.model_dump())

    # -- the backend call ----------------------------------------------------------------
    def _embed_batch(self, texts: list[str]) -> RawBatch:
        """Embed a list of valid, non-empty texts; return one vector per text, in order."""
        cls = type(self)
        if cls.generate_batch is not AbstractEmbeddingGenerator.generate_batch:
            return self.generate_batch(texts)  # a documentation-style subclass
        return [self.generate(t) for t in texts]

    async def _aembed_batch(self, texts: list[str]) -> RawBatch:
        """Async twin of ``_embed_batch``; by default runs it in a worker thread."""
        return await asyncio.to_thread(self._embed_batch, texts)

    def _batcher_for(self, chunk: list[str]) -> MicroBatcher | None:
        """The micro-batcher when this chunk should go through it (small chunks only)."""
        config = self.micro_batching
        if config is None or not config.enabled or len(chunk) >= config.max_batch_size:
            return None
        if self._batcher is None:
            with self._batcher_lock:
                if self._batcher is None:
                    self._batcher = MicroBatcher(self._embed_batch, config, name=self.name or self.provider)
        return self._batcher

    def _run_chunk(self, chunk: list[str]) -> RawBatch:
        batcher = self._batcher_for(chunk)
        return batcher.submit(chunk).result() if batcher else self._embed_batch(chunk)

    async def _arun_chunk(self, chunk: list[str]) -> RawBatch:
        batcher = self._batcher_for(chunk)
        if batcher:
            return await asyncio.wrap_future(batcher.submit(chunk))
        return await self._aembed_batch(chunk)

    def _chunk_size(self) -> int:
        limit = type(self).max_batch_size
        return min(self.batch_size, limit) if limit else self.batch_size

    # -- the public API ------------------------------------------------------------------
    def embed(self, texts: Sequence[str], *, normalize: bool | None = None) -> Embeddings:
        """Embed ``texts`` and return :class:`Embeddings` (float32 matrix plus token usage)."""
        items = check_texts(texts)
        if not items:
            return self._empty()
        parts = [self._accept(self._run_chunk(chunk), len(chunk)) for chunk in self._chunks(items)]
        return self._finish(parts, normalize)

    async def aembed(self, texts: Sequence[str], *, normalize: bool | None = None) -> Embeddings:
        """Async twin of :meth:`embed`."""
        items = check_texts(texts)
        if not items:
            return self._empty()
        parts = [self._accept(await self._arun_chunk(chunk), len(chunk)) for chunk in self._chunks(items)]
        return self._finish(parts, normalize)

    def encode(self, texts: Sequence[str], *, normalize: bool | None = None) -> np.ndarray:
        """Embed ``texts`` into a float32 numpy matrix, one row per text."""
        return self.embed(texts, normalize=normalize).vectors

    async def aencode(self, texts: Sequence[str], *, normalize: bool | None = None) -> np.ndarray:
        return (await self.aembed(texts, normalize=normalize)).vectors

    def generate(self, text: str) -> list[float]:
        """Embed one text: ``gen.generate("What is AI?") -> [0.01, ...]``."""
        return self.encode([check_text(text)])[0].tolist()

    def generate_batch(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed several texts, in order: ``gen.generate_batch(["one", "two"])``."""
        return self.encode(texts).tolist()

    async def agenerate(self, text: str) -> list[float]:
        return (await self.aencode([check_text(text)]))[0].tolist()

    async def agenerate_batch(self, texts: Sequence[str]) -> list[list[float]]:
        return (await self.aencode(texts)).tolist()

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        """Tokens the model would see for ``texts``, or None when the backend cannot tell."""
        return None

    def warm_up(self) -> None:
        """Load models / open connections now instead of on first use."""

    def close(self) -> None:
        """Release models, clients and channels (subclasses call ``super().close()``)."""
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- description ---------------------------------------------------------------------
    @property
    def output_dims(self) -> int | None:
        """Width of the vectors this generator returns, when known without calling it."""
        return self.dims or self.dimensions or self._observed_dims

    def describe(self) -> dict[str, Any]:
        """Provider, model, dims and normalization (never secrets)."""
        return {
            "provider": self.provider,
            "model": self.model,
            "dims": self.output_dims,
            "normalize": self.normalize,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({fields})"

    # -- the contract, applied once for every backend ------------------------------------
    def _who(self) -> str:
        label = self.name or self.model or type(self).__name__
        return f"{self.provider} generator {label!r}"

    def _chunks(self, items: list[str]) -> Iterator[list[str]]:
        size = max(1, self._chunk_size())
        for start in range(0, len(items), size):
            yield items[start : start + size]

    def _accept(self, raw: RawBatch, rows: int) -> BackendResult:
        tokens = None
        if isinstance(raw, BackendResult):
            tokens = raw.prompt_tokens if raw.token_counts is None else sum(raw.token_counts)
            raw = raw.vectors
        return BackendResult(as_matrix(raw, rows, who=self._who()), tokens)

    def _finish(self, parts: list[BackendResult], normalize: bool | None) -> Embeddings:
        widths = {p.vectors.shape[1] for p in parts}
        if len(widths) > 1:
            from .errors import EmbeddingContractError

            raise EmbeddingContractError(f"{self._who()}: returned vectors of unequal lengths {sorted(widths)}")
        matrix = parts[0].vectors if len(parts) == 1 else np.concatenate([p.vectors for p in parts])
        if self.dimensions is not None:
            matrix = truncate(matrix, self.dimensions, who=self._who())
        check_dims(matrix, self.dims, who=self._who())
        self._observed_dims = matrix.shape[1]
        if self.normalize if normalize is None else normalize:
            matrix = l2_normalize(matrix)
        counts = [p.prompt_tokens for p in parts]
        tokens = None if any(c is None for c in counts) else sum(counts)  # type: ignore[arg-type]
        self.usage.record(matrix.shape[0], tokens)
        return Embeddings(matrix, tokens, self.name)

    def _empty(self) -> Embeddings:
        return Embeddings(np.empty((0, self.output_dims or 0), dtype=np.float32), 0, self.name)


def _micro_batching(value: Any, default: bool) -> MicroBatching | None:
    if value is None:
        return MicroBatching() if default else None
    if isinstance(value, bool):
        return MicroBatching(enabled=value)
    if isinstance(value, MicroBatching):
        return value
    return MicroBatching.model_validate(dict(value))


# The documented import path (``...generator import OpenAIEmbeddingGenerator``) without
# importing every backend up front.
_LAZY = {
    "HuggingFaceEmbeddingGenerator": "agent_embeddings.backends.huggingface",
    "OpenAIEmbeddingGenerator": "agent_embeddings.backends.openai",
    "AIOSEmbeddings": "agent_embeddings.backends.aios",
    "EmbeddingGeneratorManager": "agent_embeddings.manager",
    "build_embeddings_from_model_item": "agent_embeddings.factory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
