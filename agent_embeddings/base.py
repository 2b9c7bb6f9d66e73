"""``AbstractEmbeddingGenerator``: the contract every backend implements, and the calls users make.

A backend implements one method, ``_embed_batch(texts, input_type=...) -> result`` (optionally
``_aembed_batch``) and declares whether it reads ``input_type`` (``takes_input_type``); this class supplies single and batch calls, sync and async, the dims
contract and normalization. What happens around a call lives beside it, in small
collaborators: :mod:`.cache` (look-up and store), :mod:`.observability` (hooks and
statistics), :mod:`.retry` (transient failures) and :mod:`.batching` (coalescing concurrent
small calls).

>>> class Lengths(AbstractEmbeddingGenerator):
...     provider = "example"
...     def _embed_batch(self, texts):
...         return [[len(t), 1.0] for t in texts]
>>> Lengths(normalize=False).generate_batch(["ab", "abcd"])
[[2.0, 1.0], [4.0, 1.0]]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import ValidationError

from .batching import BatcherSlot, MicroBatcher, MicroBatching, micro_batching_config
from .cache import CacheConfig, EmbeddingCache, cached, make_cache
from .cancellation import cancellable
from .contract import accept, finish
from .doc_style import adapt
from .errors import BackendError, ConfigurationError, SpecError
from .flow import Flow, Step, arun, run
from .observability import GeneratorStats, call_finished, call_started
from .results import BackendResult, Embeddings, RawBatch, Usage
from .retry import RetryPolicy, aretry_call, retry_call
from .space import SpaceIdentity, input_kind
from .specs import GeneratorParams, ModelItem, format_validation_error, parse_params
from .vectors import InputType, check_input_type, check_text, check_texts

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AbstractEmbeddingGenerator"]


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
    #: Whether ``_embed_batch`` reads ``input_type`` (passed as a keyword): declared, so that
    #: generators written before it (``_embed_batch(self, texts)``) keep working unchanged.
    takes_input_type: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        adapt(cls, AbstractEmbeddingGenerator)  # a documentation-style subclass gets its _embed_batch

    def __init__(
        self,
        params: GeneratorParams | None = None,
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
        """Backends pass their validated ``params`` whole; custom generators may use the keywords."""
        if params is not None:
            dims, normalize, batch_size, dimensions = params.dims, params.normalize, params.batch_size, params.dimensions
        #: the backend's validated ``llm_parameters`` (None for generators built from keywords alone)
        self.params = params
        self.dims = dims
        self.normalize = normalize
        self.batch_size = batch_size
        self.dimensions = dimensions
        self.model = model
        self.name = name
        self.model_id = model_id
        #: the item's ``llm_selection_query`` (set by :meth:`from_model_item`; ``aios:`` sends it)
        self.selection_query: dict[str, Any] = {}
        self.usage = Usage()
        #: the built-in collector: calls, errors by type, latency, batch sizes, cache hits
        self.stats = GeneratorStats()
        self.micro_batching = micro_batching_config(micro_batching, type(self).micro_batching_default)
        # one per input type, each with as many workers as the backend runs calls side by side
        self._batching = BatcherSlot(self._call_backend, self.stats.note_micro_batch, workers=self.concurrent_calls)
        #: retry policy of the shared retry loop (backends with ``native_retries`` map it instead)
        self.retry = RetryPolicy()
        if retry is not None:
            self.configure_retry(retry if isinstance(retry, RetryPolicy) else RetryPolicy.model_validate(dict(retry)))
        self.cache: EmbeddingCache | None = cache if isinstance(cache, EmbeddingCache) else make_cache(
            dict(cache) if isinstance(cache, Mapping) else cache
        )
        #: another generator's name to use when this one fails (resolved by the manager)
        self.fallback: str | None = None
        self.allow_incompatible_fallback = False
        self._observed_dims: int | None = None
        if dims is not None and dimensions is not None and dims != dimensions:
            raise SpecError(f"{self._who()}: dims={dims} contradicts dimensions={dimensions}; give one of them")
        if type(self)._embed_batch is AbstractEmbeddingGenerator._embed_batch:
            raise TypeError(f"{type(self).__name__} must implement _embed_batch(texts) (or generate_batch/generate)")
        if params is not None:
            self._apply(params)

    @classmethod
    def options(cls, params: GeneratorParams | None, options: Mapping[str, Any], *, who: str) -> Any:
        """``params`` as given, or keyword ``options`` validated once by ``cls.Params``.

        Backends call it first thing in ``__init__``, so that ``Backend(device="cpu")`` and
        ``Backend(params=Backend.Params(device="cpu"))`` are the same generator.
        """
        if params is not None:
            if options:
                raise ConfigurationError(f"{who}: give params or keyword options ({', '.join(options)}), not both")
            return params
        try:
            return cls.Params.model_validate(dict(options))
        except ValidationError as exc:
            raise ConfigurationError(format_validation_error(exc, where=who)) from None

    def _apply(self, params: GeneratorParams) -> None:
        """The reliability and identity settings of ``llm_parameters`` (not constructor keywords)."""
        if params.micro_batching is not None:
            self.micro_batching = params.micro_batching
        if params.retry is not None:
            self.configure_retry(params.retry)
        if params.cache is not None and self.cache is None:
            self.cache = make_cache(params.cache)
        if params.model_id is not None:
            self.model_id = params.model_id
        self.fallback = params.fallback
        self.allow_incompatible_fallback = params.allow_incompatible_fallback

    # -- construction from a spec -------------------------------------------------------
    @classmethod
    def from_model_item(cls, item: ModelItem) -> Self:
        """Build from a spec item; ``llm_parameters`` are validated once, by ``cls.Params``.

        Every built-in backend is built the same way: ``cls(params=params, model=item.model)``.
        """
        params = parse_params(cls.Params, item)
        if getattr(params, "api_key", None) is not None:  # works, but specs should carry no secrets
            warnings.warn(
                f"{item.llm_block_id!r}: llm_parameters.api_key holds a literal key in the spec; "
                "prefer api_key_ref ('env:NAME' or 'file:PATH') so that specs carry no secrets",
                UserWarning,
                stacklevel=2,
            )
        try:
            generator = cls.from_params(item, params)
        except ConfigurationError as exc:  # name the item (the factory puts the spec location in its place)
            if str(exc).startswith(repr(item.llm_block_id)):
                raise
            raise type(exc)(f"{item.llm_block_id!r}: {exc}") from exc.__cause__
        if generator.params is not params:  # a plugin whose from_params passes keywords, not params
            generator._apply(params)
        generator.selection_query = dict(item.llm_selection_query)
        return generator

    @classmethod
    def from_params(cls, item: ModelItem, params: Any) -> Self:
        """Build from validated parameters: the one constructor shape, ``cls(params=..., model=...)``.
        A plugin whose constructor differs may override it."""
        return cls(model=item.model, params=params)

    def configure_retry(self, policy: RetryPolicy) -> None:
        """Use ``policy`` for transient failures. Backends whose client retries override this to map it."""
        self.retry = policy

    @property
    def model_identity(self) -> str | None:
        """What model the vectors come from: ``model_id`` if declared, else ``model``."""
        return self.model_id or self.model

    # -- the contract: what a backend implements -----------------------------------------
    def _embed_batch(self, texts: list[str], *, input_type: InputType | None = None) -> RawBatch:
        """Embed a list of valid, non-empty texts; return one vector per text, in order (a matrix,
        lists, or a :class:`BackendResult` with token counts). ``input_type`` is passed only to
        classes that declare ``takes_input_type``."""
        raise NotImplementedError  # every concrete class has its own, or doc_style's adapter

    async def _aembed_batch(self, texts: list[str], *, input_type: InputType | None = None) -> RawBatch:
        """Async twin of ``_embed_batch``; by default runs it in a worker thread (``input_type`` included)."""
        return await asyncio.to_thread(self._backend, texts, input_type)

    def _chunk_size(self) -> int:
        """Texts per backend call (backends that split by their own limits return more)."""
        limit = type(self).max_batch_size
        return min(self.batch_size, limit) if limit else self.batch_size

    # -- the public API ------------------------------------------------------------------
    def embed(
        self, texts: Sequence[str], *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> Embeddings:
        """Embed ``texts`` and return :class:`Embeddings` (float32 matrix plus token usage).

        The one place every call goes through (:meth:`_embed_flow`, shared with :meth:`aembed`).
        """
        return run(self._embed_flow(texts, normalize, input_type))

    async def aembed(
        self, texts: Sequence[str], *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> Embeddings:
        """Async twin of :meth:`embed`."""
        return await arun(self._embed_flow(texts, normalize, input_type))

    def _embed_flow(
        self, texts: Sequence[str], normalize: bool | None, input_type: InputType | None
    ) -> Flow[Embeddings]:
        """A call, written once for both APIs (:mod:`.flow`): the hooks and statistics, the cache
        (only misses reach the backend), then chunks through the micro-batcher and the retry loop
        to the backend, and the contract checks."""
        items = check_texts(texts)
        input_type = check_input_type(input_type)
        if not items:
            return self._empty()
        record = call_started(self.stats, self.name or self.provider, self.provider, self.model_identity, len(items))
        try:
            if self.cache is None:
                result = yield from self._compute(items, normalize, input_type)
            else:
                result = yield from cached(
                    self.cache, self.cache_namespace(normalize, input_type), items, self.output_dims,
                    lambda misses: self._compute(misses, normalize, input_type), who=self._who(), name=self.name,
                )
                self._observed_dims = result.vectors.shape[1]
        except BaseException as exc:
            call_finished(self.stats, record, None, exc)
            raise
        call_finished(self.stats, record, result, None)
        return result

    def encode(
        self, texts: Sequence[str], *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> np.ndarray:
        """Embed ``texts`` into a float32 numpy matrix, one row per text."""
        return self.embed(texts, normalize=normalize, input_type=input_type).vectors

    async def aencode(
        self, texts: Sequence[str], *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> np.ndarray:
        """Async twin of :meth:`encode`."""
        return (await self.aembed(texts, normalize=normalize, input_type=input_type)).vectors

    def generate(self, text: str, *, input_type: InputType | None = None) -> list[float]:
        """Embed one text: ``gen.generate("What is AI?", input_type="query") -> [0.01, ...]``.

        ``input_type`` (``"query"``, ``"document"`` or None) picks the prompt the spec declares
        for queries or documents; backends without such a notion ignore it.
        """
        row: list[float] = self.encode([check_text(text)], input_type=input_type)[0].tolist()
        return row

    def generate_batch(self, texts: Sequence[str], *, input_type: InputType | None = None) -> list[list[float]]:
        """Embed several texts, in order: ``gen.generate_batch(["one", "two"], input_type="document")``."""
        return self.embed(texts, input_type=input_type).tolist()

    async def agenerate(self, text: str, *, input_type: InputType | None = None) -> list[float]:
        """Async twin of :meth:`generate`."""
        row: list[float] = (await self.aencode([check_text(text)], input_type=input_type))[0].tolist()
        return row

    async def agenerate_batch(
        self, texts: Sequence[str], *, input_type: InputType | None = None
    ) -> list[list[float]]:
        """Async twin of :meth:`generate_batch`."""
        return (await self.aembed(texts, input_type=input_type)).tolist()

    def input_signature(self, input_type: InputType | None) -> str | None:
        """What ``input_type`` changes in this generator's vectors (part of the cache key): None
        when nothing. A backend whose ``_embed_batch`` takes ``input_type`` returns the type; ``hf:``
        returns the prompt it resolves to."""
        return input_type if type(self).takes_input_type else None

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        """Tokens the model would see for ``texts``, or None when the backend cannot tell."""
        return None

    def warm_up(self) -> None:
        """Load models / open connections now instead of on first use."""

    def concurrent_calls(self) -> int:
        """Backend calls this generator runs well side by side (1: one at a time). Its micro-batcher keeps
        that many batches in flight, gathering the next while the others run; ``hf:`` on ONNX Runtime
        says its ``streams``. Asked once, when the first small call starts the micro-batcher."""
        return 1

    def check(self, timeout_s: float = 10.0) -> str:
        """Resolve what this generator needs, without embedding and without loading a model: local
        weights found, an endpoint that answers within ``timeout_s`` and serves the model, a key it
        accepts. Returns what was found; raises an :class:`AgentEmbeddingsError` naming what is not.
        (``agent-embeddings validate --check``.) A backend without a check of its own is only built.
        """
        return "built (this backend has no check of its own)"

    def close(self) -> None:
        """Release models, clients and channels (subclasses call ``super().close()``)."""
        self._batching.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- description ---------------------------------------------------------------------
    @property
    def batcher(self) -> MicroBatcher | None:
        """The micro-batcher once a call has started it (its ``batches``/``requests`` tell how it coalesces)."""
        return self._batching.current

    @property
    def output_dims(self) -> int | None:
        """Width of the vectors this generator returns, when known without calling it."""
        return self.dims or self.dimensions or self._observed_dims

    @property
    def shown_model(self) -> str | None:
        """The model as listings show it: ``model``, or what a remote backend has learned of it."""
        return self.model

    def describe(self) -> dict[str, Any]:
        """Provider, model, dims and normalization (never secrets), and the space id once it is known."""
        desc: dict[str, Any] = {
            "provider": self.provider, "model": self.shown_model, "dims": self.output_dims, "normalize": self.normalize,
        }
        known = self.known_space()
        if known is not None:
            desc["space_id"] = known.space_id
        return desc

    # -- the embedding space ---------------------------------------------------------------
    def space(self) -> SpaceIdentity:
        """The :class:`~agent_embeddings.space.SpaceIdentity` of this generator's vectors.

        Backends that need their model (``hf:``) or their endpoint (``openai:``, ``aios:``) to
        know it load or ask once; :meth:`known_space` never does.

        >>> gen.space().space_id                                        # doctest: +SKIP
        'all-minilm-l6-v2-7c1f09ab'
        """
        return self._declared_space()

    def known_space(self) -> SpaceIdentity | None:
        """:meth:`space` when it is known without loading a model or calling an endpoint, else None."""
        return self._declared_space()

    def _declared_space(self) -> SpaceIdentity:
        """What the generator itself says: its model, width, normalization, and what its input types
        change (for a backend that takes ``input_type``, the type's name)."""
        return SpaceIdentity(
            model=self.model_identity, normalize=self.normalize, dims=self.output_dims, dimensions=self.dimensions,
            query_prompt=self.input_signature("query"), document_prompt=self.input_signature("document"),
        )

    def cache_scope(self) -> str | None:
        """What the cache namespace needs beyond the space: where the vectors come from, when the
        space alone does not pin them down (a custom class; an endpoint known by model name only)."""
        return f"{type(self).__module__}.{type(self).__qualname__}"

    def cache_namespace(self, normalize: bool | None = None, input_type: InputType | None = None) -> str:
        """Hash of what makes these vectors what they are: the space (model, precision, prompt of
        this input type, width, truncation, sequence limit), the normalization of this call and,
        where the space does not pin the vectors down, their source. Part of every cache key: one
        space reached two ways (``hf:`` here, ``openai:`` at our server) shares its entries."""
        try:
            space = self.space()
        except BackendError:  # an endpoint that cannot tell its space now: its name, kept apart by scope
            space = self._declared_space()
        ident = {
            # the declared width, not the observed one: a key must not change after the first call
            "space": space.model_copy(update={"dims": self.dims or self.dimensions}).model_dump(),
            "normalize": self.normalize if normalize is None else normalize,
            "input": space.prompt_for(input_kind(input_type)),
            "scope": self.cache_scope(),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({fields})"

    def _who(self) -> str:
        label = self.name or self.model or type(self).__name__
        return f"{self.provider} generator {label!r}"

    # -- the call path: chunks -> micro-batcher -> retry -> backend -> contract ----------
    def _compute(self, items: list[str], normalize: bool | None, input_type: InputType | None = None) -> Flow[Embeddings]:
        parts = []
        for chunk in self._chunks(items):
            raw = yield Step(partial(self._run_chunk, chunk, input_type), partial(self._arun_chunk, chunk, input_type))
            parts.append(self._accept(raw, len(chunk)))
        return self._finish(parts, normalize)

    def _chunks(self, items: list[str]) -> Iterator[list[str]]:
        size = max(1, self._chunk_size())
        for start in range(0, len(items), size):
            yield items[start : start + size]

    def _run_chunk(self, chunk: list[str], input_type: InputType | None = None) -> RawBatch:
        kind = input_type if type(self).takes_input_type else None
        batcher = self._batching.for_chunk(self.micro_batching, chunk, self.name or self.provider, kind)
        return batcher.submit(chunk).result() if batcher else self._call_backend(chunk, kind)

    async def _arun_chunk(self, chunk: list[str], input_type: InputType | None = None) -> RawBatch:
        kind = input_type if type(self).takes_input_type else None
        batcher = self._batching.for_chunk(self.micro_batching, chunk, self.name or self.provider, kind)
        if batcher:  # cancelled while queued: the texts leave the batch; while running: see on_behalf_of
            return await cancellable(lambda: asyncio.wrap_future(batcher.submit(chunk)))
        return await self._acall_backend(chunk, kind)

    def _backend(self, texts: list[str], input_type: InputType | None) -> RawBatch:
        if input_type is None:  # also every generator that does not take it (kind is None then)
            return self._embed_batch(texts)
        return self._embed_batch(texts, input_type=input_type)

    async def _abackend(self, texts: list[str], input_type: InputType | None) -> RawBatch:
        if input_type is None:
            return await self._aembed_batch(texts)
        return await self._aembed_batch(texts, input_type=input_type)

    def _call_backend(self, texts: list[str], input_type: InputType | None = None) -> RawBatch:
        """One backend call, with the shared retry loop unless the client library retries itself."""
        if type(self).native_retries or self.retry.attempts <= 1:
            return self._backend(texts, input_type)
        return retry_call(
            lambda: self._backend(texts, input_type), self.retry, who=self._who(), on_retry=self.stats.note_retry
        )

    async def _acall_backend(self, texts: list[str], input_type: InputType | None = None) -> RawBatch:
        """The async twin, cancellable: when the awaiting task is cancelled (the caller left), a worker
        thread running the call is told so (:mod:`.cancellation`) and may stop between its steps."""
        if type(self).native_retries or self.retry.attempts <= 1:
            return await cancellable(lambda: self._abackend(texts, input_type))
        return await cancellable(lambda: aretry_call(
            lambda: self._abackend(texts, input_type), self.retry, who=self._who(), on_retry=self.stats.note_retry
        ))

    def _accept(self, raw: RawBatch, rows: int) -> BackendResult:
        return accept(raw, rows, who=self._who())

    def _finish(self, parts: list[BackendResult], normalize: bool | None) -> Embeddings:
        """The contract (:mod:`.contract`), then the usage totals."""
        matrix, tokens = finish(
            parts, dims=self.dims, dimensions=self.dimensions, who=self._who(),
            normalize=self.normalize if normalize is None else normalize,
        )
        self._observed_dims = matrix.shape[1]
        self.usage.record(matrix.shape[0], tokens)
        return Embeddings(matrix, tokens, self.name)

    def _empty(self) -> Embeddings:
        return Embeddings(np.empty((0, self.output_dims or 0), dtype=np.float32), 0, self.name)
