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
import hashlib
import importlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Union

import numpy as np

from .batching import MicroBatcher, MicroBatching
from .cache import CacheConfig, EmbeddingCache, make_cache
from .observability import CallRecord, GeneratorStats
from .plugins import pm
from .retry import RetryPolicy, aretry_call, retry_call
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


log = logging.getLogger("agent_embeddings.generator")

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
    #: True when the backend's client library retries by itself: ``configure_retry`` maps the
    #: policy onto it and the shared retry loop stays out of the way (no double retries).
    native_retries: ClassVar[bool] = False

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
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        cache: CacheConfig | Mapping[str, Any] | bool | EmbeddingCache | None = None,
        model_id: str | None = None,
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
        #: retry policy of the shared retry loop (backends with ``native_retries`` map it instead)
        self.retry: RetryPolicy = RetryPolicy()
        if retry is not None:
            self.configure_retry(retry if isinstance(retry, RetryPolicy) else RetryPolicy.model_validate(dict(retry)))
        self.cache: EmbeddingCache | None = cache if isinstance(cache, EmbeddingCache) else make_cache(cache)
        self.model_id = model_id
        #: another generator's name to use when this one fails (resolved by the manager)
        self.fallback: str | None = None
        self.allow_incompatible_fallback = False
        #: the built-in collector: calls, errors by type, latency, batch sizes, cache hits
        self.stats = GeneratorStats()
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
        if getattr(params, "retry", None) is not None:
            generator.configure_retry(params.retry)
        if getattr(params, "cache", None) is not None:
            generator.cache = make_cache(params.cache)
        if getattr(params, "model_id", None) is not None:
            generator.model_id = params.model_id
        generator.fallback = getattr(params, "fallback", None)
        generator.allow_incompatible_fallback = bool(getattr(params, "allow_incompatible_fallback", False))
        return generator

    # -- reliability -----------------------------------------------------------------------
    def configure_retry(self, policy: RetryPolicy) -> None:
        """Use ``policy`` for transient failures. Backends whose client retries override this to map it."""
        self.retry = policy

    @property
    def model_identity(self) -> str | None:
        """What model the vectors come from: ``model_id`` if declared, else ``model``."""
        return self.model_id or self.model

    def _call_backend(self, texts: list[str]) -> RawBatch:
        """One backend call, with the shared retry loop unless the client library retries itself."""
        if type(self).native_retries or self.retry.attempts <= 1:
            return self._embed_batch(texts)
        return retry_call(lambda: self._embed_batch(texts), self.retry, who=self._who(), on_retry=self.stats.note_retry)

    async def _acall_backend(self, texts: list[str]) -> RawBatch:
        if type(self).native_retries or self.retry.attempts <= 1:
            return await self._aembed_batch(texts)
        return await aretry_call(
            lambda: self._aembed_batch(texts), self.retry, who=self._who(), on_retry=self.stats.note_retry
        )

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
                    self._batcher = MicroBatcher(self._call_backend, config, name=self.name or self.provider)
        return self._batcher

    def _run_chunk(self, chunk: list[str]) -> RawBatch:
        batcher = self._batcher_for(chunk)
        return batcher.submit(chunk).result() if batcher else self._call_backend(chunk)

    async def _arun_chunk(self, chunk: list[str]) -> RawBatch:
        batcher = self._batcher_for(chunk)
        if batcher:
            return await asyncio.wrap_future(batcher.submit(chunk))
        return await self._acall_backend(chunk)

    def _chunk_size(self) -> int:
        limit = type(self).max_batch_size
        return min(self.batch_size, limit) if limit else self.batch_size

    # -- the public API ------------------------------------------------------------------
    def embed(self, texts: Sequence[str], *, normalize: bool | None = None) -> Embeddings:
        """Embed ``texts`` and return :class:`Embeddings` (float32 matrix plus token usage).

        The one place every call goes through: the cache (only misses reach the backend), the
        observability hooks and statistics, then chunks through the micro-batcher and the
        retry loop to the backend, and the contract checks.
        """
        items = check_texts(texts)
        if not items:
            return self._empty()
        record = self._begin(len(items))
        try:
            if self.cache is None:
                result = self._compute(items, normalize)
            else:
                keys, found = self._lookup(items, normalize)
                misses = _misses(items, found)
                computed = self._compute(misses, normalize) if misses else None
                result = self._merge(items, keys, found, misses, computed) or self._compute(items, normalize)
        except BaseException as exc:
            self._end(record, None, exc)
            raise
        self._end(record, result, None)
        return result

    async def aembed(self, texts: Sequence[str], *, normalize: bool | None = None) -> Embeddings:
        """Async twin of :meth:`embed`."""
        items = check_texts(texts)
        if not items:
            return self._empty()
        record = self._begin(len(items))
        try:
            if self.cache is None:
                result = await self._acompute(items, normalize)
            else:
                if self.cache.kind == "memory":
                    keys, found = self._lookup(items, normalize)
                else:  # file I/O stays off the event loop
                    keys, found = await asyncio.to_thread(self._lookup, items, normalize)
                misses = _misses(items, found)
                computed = await self._acompute(misses, normalize) if misses else None
                merged = self._merge(items, keys, found, misses, computed)
                result = merged or await self._acompute(items, normalize)
        except BaseException as exc:
            self._end(record, None, exc)
            raise
        self._end(record, result, None)
        return result

    def _compute(self, items: list[str], normalize: bool | None) -> Embeddings:
        parts = [self._accept(self._run_chunk(chunk), len(chunk)) for chunk in self._chunks(items)]
        return self._finish(parts, normalize)

    async def _acompute(self, items: list[str], normalize: bool | None) -> Embeddings:
        parts = [self._accept(await self._arun_chunk(chunk), len(chunk)) for chunk in self._chunks(items)]
        return self._finish(parts, normalize)

    # -- the cache -------------------------------------------------------------------------
    def cache_namespace(self, normalize: bool | None = None) -> str:
        """Hash of what makes this generator's vectors what they are: model identity, provider and
        settings, declared ``dims``, ``dimensions`` and normalization. Part of every cache key."""
        desc = {k: v for k, v in self.describe().items() if k not in ("dims", "model", "normalize")}
        ident = {
            "model": self.model_identity,
            "provider": self.provider,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "dims": self.dims,
            "dimensions": self.dimensions,
            "normalize": self.normalize if normalize is None else normalize,
            "describe": desc,
            "settings": {k: getattr(self, k, None) for k in ("prompt", "prompt_name", "max_seq_length", "revision")},
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def _lookup(self, items: list[str], normalize: bool | None) -> tuple[list[str], list[np.ndarray | None]]:
        assert self.cache is not None
        prefix = self.cache_namespace(normalize) + "\0"
        keys = [
            hashlib.sha256((prefix + t).encode("utf-8", "surrogatepass")).hexdigest() for t in items
        ]
        found = self.cache.get_many(keys)
        for i, vec in enumerate(found):  # a damaged or foreign entry is a miss
            if vec is not None and (vec.ndim != 1 or not np.isfinite(vec).all()):
                found[i] = None
        return keys, found

    def _merge(
        self,
        items: list[str],
        keys: list[str],
        found: list[np.ndarray | None],
        misses: list[str],
        computed: Embeddings | None,
    ) -> Embeddings | None:
        """Hits and computed misses, in input order; None when they disagree in width (recompute)."""
        assert self.cache is not None
        widths = {v.shape[0] for v in found if v is not None}
        if computed is not None:
            widths.add(computed.vectors.shape[1])
        if len(widths) != 1 or (self.dims is not None and widths != {self.dims}):
            log.warning("%s: cached vectors of another width %s; recomputing", self._who(), sorted(widths))
            self.cache.clear()
            return None
        width = widths.pop()
        matrix = np.empty((len(items), width), dtype=np.float32)
        row_of = {t: i for i, t in enumerate(misses)}
        hits = 0
        for i, (text, vec) in enumerate(zip(items, found)):
            if vec is not None:
                matrix[i] = vec
                hits += 1
            else:
                assert computed is not None
                matrix[i] = computed.vectors[row_of[text]]
        if computed is not None:
            key_of = {t: k for t, k, v in zip(items, keys, found) if v is None}
            self.cache.put_many([(key_of[t], computed.vectors[j]) for j, t in enumerate(misses)])
        self._observed_dims = width
        tokens = computed.prompt_tokens if computed is not None else 0
        return Embeddings(matrix, tokens, self.name, cache_hits=hits)

    # -- observability ---------------------------------------------------------------------
    def _begin(self, batch_size: int) -> CallRecord:
        record = CallRecord(self.name or self.provider, self.provider, self.model_identity, batch_size)
        self.stats.started()
        try:
            pm.hook.before_embed(record=record)
        except Exception:  # noqa: BLE001 - a broken metrics plugin never fails a call
            log.exception("a before_embed hook failed (ignored)")
        return record

    def _end(self, record: CallRecord, result: Embeddings | None, error: BaseException | None) -> None:
        record.latency_s = time.perf_counter() - record.started
        if result is not None:
            record.dims = int(result.vectors.shape[1])
            record.prompt_tokens = result.prompt_tokens
            record.cache_hits = result.cache_hits
        if error is not None:
            record.error_type = type(error).__name__
        self.stats.finished(record)
        try:
            pm.hook.after_embed(record=record)
        except Exception:  # noqa: BLE001
            log.exception("an after_embed hook failed (ignored)")

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
        if self.cache is not None:
            self.cache.close()

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


def _misses(items: list[str], found: list[np.ndarray | None]) -> list[str]:
    """The distinct texts not found in the cache, in first-seen order (duplicates computed once)."""
    return list(dict.fromkeys(t for t, v in zip(items, found) if v is None))


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
