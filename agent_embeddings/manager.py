"""EmbeddingGeneratorManager: generators by name, and the calls agents make.

>>> manager = EmbeddingGeneratorManager.from_subject_spec("specs/default.json")  # doctest: +SKIP
>>> vec = manager.generate("hf", "What is AI?")                                   # doctest: +SKIP
>>> vecs = manager.generate_batch("hf-minilm", ["Hello", "World"])               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import AbstractEmbeddingGenerator
from .errors import (
    BackendError,
    BadRequestError,
    ConfigurationError,
    DimensionMismatchError,
    SpecError,
    UnknownGeneratorError,
)
from .factory import build_embeddings_from_model_item
from .results import Embeddings, GeneratorInfo
from .space import SpaceCheck
from .specs import ModelItem, SpecSource, SubjectSpec, load_spec, require_embeddings, skipped_items, spec_origin
from .vectors import InputType, check_text

if TYPE_CHECKING:
    from .bulk.search import Hit

__all__ = ["EmbeddingGeneratorManager", "GeneratorInfo", "fallback_incompatibility"]

log = logging.getLogger("agent_embeddings.manager")


class EmbeddingGeneratorManager:
    """Holds generators by name; safe to call from many threads and from asyncio."""

    def __init__(self) -> None:
        self._generators: dict[str, AbstractEmbeddingGenerator] = {}
        self._aliases: dict[str, str] = {}  # alias -> canonical name
        self._block_ids: dict[str, str] = {}  # canonical name -> llm_block_id
        self._items: dict[str, ModelItem] = {}  # canonical name -> its spec item
        self._fallbacks: dict[str, str] = {}  # canonical name -> canonical name of its fallback
        self._lock = threading.RLock()
        self._verified: set[tuple[str, str]] = set()  # (generator, output snapshot) whose spaces agree
        self.spec: SubjectSpec | None = None

    # -- registration ----------------------------------------------------------------------
    def register_generator(
        self,
        name: str,
        generator: AbstractEmbeddingGenerator,
        *,
        aliases: Sequence[str] = (),
        replace: bool = False,
    ) -> None:
        """Register ``generator`` under ``name`` (and optional ``aliases``)."""
        if not isinstance(name, str) or not name:
            raise ValueError("generator name must be a non-empty string")
        if not isinstance(generator, AbstractEmbeddingGenerator):
            raise TypeError(f"expected an AbstractEmbeddingGenerator, got {type(generator).__name__}")
        with self._lock:
            if replace and name in self._generators:
                self.unregister(name)
            taken = [n for n in (name, *aliases) if n in self._generators or n in self._aliases]
            if taken:
                raise ValueError(f"generator name(s) already registered: {', '.join(taken)}")
            self._generators[name] = generator
            for alias in aliases:
                self._aliases[alias] = name
            if generator.name is None:
                generator.name = name

    def unregister(self, name: str) -> AbstractEmbeddingGenerator:
        """Remove a generator (by name or alias) and return it; it is not closed."""
        with self._lock:
            canonical = self._canonical(name)
            self._aliases = {a: n for a, n in self._aliases.items() if n != canonical}
            self._block_ids.pop(canonical, None)
            self._items.pop(canonical, None)
            self._fallbacks.pop(canonical, None)
            self._fallbacks = {k: v for k, v in self._fallbacks.items() if v != canonical}
            return self._generators.pop(canonical)

    def resolve(self, name: str) -> str:
        """The canonical name of ``name`` (a name or an alias); unknown names list the known ones.

        A dictionary look-up: servers call it once per request.
        """
        return self._canonical(name)

    def info(self, name: str) -> GeneratorInfo:
        """The :meth:`list_generators` row of one generator (by name or alias), built alone."""
        with self._lock:
            return self._info(self._canonical(name))

    def model_item(self, name: str) -> ModelItem | None:
        """The spec item a generator was built from (None when registered by hand)."""
        return self._items.get(self._canonical(name))

    def _canonical(self, name: str) -> str:
        if name in self._generators:
            return name
        canonical = self._aliases.get(name)
        if canonical is None:
            known = ", ".join(sorted([*self._generators, *self._aliases])) or "none registered"
            raise UnknownGeneratorError(f"unknown generator {name!r}; known generators: {known}")
        return canonical

    def get(self, name: str) -> AbstractEmbeddingGenerator:
        """The generator registered under ``name`` or one of its aliases."""
        return self._generators[self._canonical(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._generators or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._generators))

    def __len__(self) -> int:
        return len(self._generators)

    def names(self) -> list[str]:
        """Canonical generator names, in registration order."""
        return list(self._generators)

    def list_generators(self) -> list[GeneratorInfo]:
        """The serving view of every generator: name, aliases, provider, model, width, space."""
        with self._lock:
            return [self._info(name) for name in self._generators]

    def _info(self, canonical: str) -> GeneratorInfo:
        aliases = [a for a, n in self._aliases.items() if n == canonical]
        return GeneratorInfo.of(self._generators[canonical], name=canonical, aliases=aliases,
                                block_id=self._block_ids.get(canonical))

    # -- embedding -------------------------------------------------------------------------
    def embed(
        self, name: str, texts: Sequence[str], *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> Embeddings:
        """Embed ``texts`` with generator ``name``; returns vectors (numpy) and token usage.

        When the generator fails after its retries and has a ``fallback``, the fallback answers;
        ``result.generator`` names whoever produced the vectors (``fallback_from`` the primary).
        """
        canonical = self._canonical(name)
        tried: list[str] = []
        while True:
            gen = self._generators[canonical]
            try:
                result = gen.embed(texts, normalize=normalize, input_type=input_type)
            except BackendError as exc:
                canonical = self._next_fallback(canonical, exc, tried)
                continue
            return self._mark(result, tried)

    async def aembed(
        self, name: str, texts: Sequence[str], *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> Embeddings:
        canonical = self._canonical(name)
        tried: list[str] = []
        while True:
            gen = self._generators[canonical]
            try:
                result = await gen.aembed(texts, normalize=normalize, input_type=input_type)
            except BackendError as exc:
                canonical = self._next_fallback(canonical, exc, tried)
                continue
            return self._mark(result, tried)

    def _next_fallback(self, canonical: str, exc: BackendError, tried: list[str]) -> str:
        """The fallback to try after ``canonical`` failed with ``exc``; re-raises when there is none."""
        target = self._fallbacks.get(canonical)
        # A refused input would be refused by the fallback too; a loop of fallbacks stops.
        if target is None or isinstance(exc, BadRequestError) or target in tried or target == canonical:
            raise exc
        tried.append(canonical)
        log.warning("generator %r failed (%s: %s); falling back to %r", canonical, type(exc).__name__, exc, target)
        self._generators[canonical].stats.note_fallback()
        return target

    def _mark(self, result: Embeddings, tried: list[str]) -> Embeddings:
        if not tried:
            return result
        primary = self._generators[tried[0]]
        width = primary.output_dims
        if (
            width is not None
            and result.vectors.shape[1] != width
            and not primary.allow_incompatible_fallback
        ):
            raise DimensionMismatchError(
                f"fallback {result.generator!r} of {tried[0]!r} returned {result.vectors.shape[1]}-dimensional "
                f"vectors, not {width}"
            )
        return replace(result, fallback_from=tried[0])

    def encode(
        self, name: str, texts: Sequence[str], *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> np.ndarray:
        """Embed ``texts`` into a float32 numpy matrix (one row per text)."""
        return self.embed(name, texts, normalize=normalize, input_type=input_type).vectors

    async def aencode(
        self, name: str, texts: Sequence[str], *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> np.ndarray:
        """Async twin of :meth:`encode`."""
        return (await self.aembed(name, texts, normalize=normalize, input_type=input_type)).vectors

    def generate(
        self, name: str, text: str, *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> list[float]:
        """Embed one text: ``manager.generate("hf", "What is AI?", input_type="query")``.

        ``normalize`` overrides the generator's own setting for this call; ``input_type``
        (``"query"`` / ``"document"``) picks the prompt the spec declares for it.
        """
        matrix = self.embed(name, [check_text(text)], normalize=normalize, input_type=input_type).vectors
        row: list[float] = matrix[0].tolist()
        return row

    def generate_batch(
        self, name: str, texts: Sequence[str], *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> list[list[float]]:
        """Embed several texts, in order: ``manager.generate_batch("hf", ["Hello", "World"])``."""
        return self.embed(name, texts, normalize=normalize, input_type=input_type).tolist()

    async def agenerate(
        self, name: str, text: str, *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> list[float]:
        """Async twin of :meth:`generate`."""
        result = await self.aembed(name, [check_text(text)], normalize=normalize, input_type=input_type)
        row: list[float] = result.vectors[0].tolist()
        return row

    async def agenerate_batch(
        self, name: str, texts: Sequence[str], *, normalize: bool | None = None, input_type: InputType | None = None
    ) -> list[list[float]]:
        """Async twin of :meth:`generate_batch`."""
        return (await self.aembed(name, texts, normalize=normalize, input_type=input_type)).tolist()

    # -- fallbacks and statistics ----------------------------------------------------------
    def set_fallback(self, name: str, fallback: str | None, *, allow_incompatible: bool = False) -> None:
        """Use generator ``fallback`` when ``name`` fails after its retries (None removes it).

        Vectors of different models live in different spaces, so the fallback must be
        embedding-compatible (same model identity, dims and normalization) unless
        ``allow_incompatible``; otherwise this raises :class:`SpecError` saying what differs.
        """
        with self._lock:
            canonical = self._canonical(name)
            if fallback is None:
                self._fallbacks.pop(canonical, None)
                return
            try:
                target = self._canonical(fallback)
            except UnknownGeneratorError as exc:
                raise SpecError(f"fallback {fallback!r} of {canonical!r}: {exc}") from None
            if target == canonical:
                raise SpecError(f"generator {canonical!r} names itself as its fallback")
            problems = fallback_incompatibility(self._generators[canonical], self._generators[target])
            if problems and not allow_incompatible:
                raise SpecError(
                    f"fallback {fallback!r} of {canonical!r} is not embedding-compatible: {'; '.join(problems)}. "
                    "Vectors from different models live in different spaces and cannot be mixed; point to the same "
                    "model (e.g. served remotely and locally, declaring llm_parameters.model_id where the block id "
                    "does not tell it), or set allow_incompatible_fallback=true if you really mean it"
                )
            if problems:
                log.warning("fallback %r of %r accepted although incompatible: %s", target, canonical, "; ".join(problems))
            self._fallbacks[canonical] = target
            self._generators[canonical].allow_incompatible_fallback = allow_incompatible

    def fallback_of(self, name: str) -> str | None:
        """The canonical name of ``name``'s fallback, if any."""
        return self._fallbacks.get(self._canonical(name))

    def stats(self) -> dict[str, dict[str, Any]]:
        """The built-in collector: per generator, calls, errors by type, texts, cache hits/misses/size,
        retries, fallbacks taken, in-flight calls, latency and batch-size histograms."""
        out: dict[str, dict[str, Any]] = {}
        for name, gen in list(self._generators.items()):
            known = gen.known_space()
            row = {"provider": gen.provider, "model": gen.model_identity,
                   "space_id": known.space_id if known is not None else None, **gen.stats.snapshot()}
            row["cache"] = gen.cache.stats() if gen.cache is not None else None
            row["fallback"] = self._fallbacks.get(name)
            out[name] = row
        return out

    def verify_space(self, name: str, manifest: str | os.PathLike[str]) -> SpaceCheck:
        """Check that ``name`` embeds into the space of an index built by ``agent-embeddings bulk``.

        ``manifest`` is the output directory (or its ``_embedding.json``). The stored identity
        must be equal and the stored probe sentences must embed to the same vectors (cosine
        >= 0.9999), which catches a model swapped behind an unchanged endpoint name. Raises
        :class:`~agent_embeddings.errors.EmbeddingSpaceError` naming each difference.

        >>> manager.verify_space("hf-minilm", "vectors/").ok  # doctest: +SKIP
        True
        """
        from .bulk.verify import verify_space

        return verify_space(self, name, manifest)

    def search(self, name: str, output: str | os.PathLike[str], query: str, k: int = 10) -> list[Hit]:
        """The ``k`` rows of a bulk output most similar to ``query``, best first (exact, streamed).

        The generator is checked against the output's space first (once per snapshot), then the
        query is embedded with ``input_type="query"``.

        >>> [(h.id, round(h.score, 2)) for h in manager.search("hf", "vectors/", "reset my password", k=3)]  # doctest: +SKIP
        [('faq-12', 0.71), ('faq-3', 0.55), ('doc-981', 0.52)]
        """
        from .bulk.search import search as search_output

        canonical = self._canonical(name)
        snapshot = (str(canonical), str(os.path.realpath(output)))
        if snapshot not in self._verified:
            self.verify_space(canonical, output)
            self._verified.add(snapshot)
        vector = self.encode(canonical, [check_text(query)], input_type="query")[0]
        return search_output(snapshot[1], vector, k)

    # -- life cycle ------------------------------------------------------------------------
    def warm_up(self, names: Sequence[str] | None = None) -> None:
        """Load models / open connections now rather than on first use."""
        for name in names if names is not None else self.names():
            self.get(name).warm_up()

    def close(self) -> None:
        """Close every generator."""
        for gen in list(self._generators.values()):
            gen.close()

    def __enter__(self) -> EmbeddingGeneratorManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- specs -----------------------------------------------------------------------------
    @classmethod
    def from_subject_spec(
        cls, source: SpecSource | SubjectSpec, *, on_config_error: Callable[[str, ConfigurationError], None] | None = None
    ) -> EmbeddingGeneratorManager:
        """Build every embeddings item of a subject spec (path, JSON string, mapping or SubjectSpec).

        Each generator is registered under the item's ``name`` if given, its prefix when that
        prefix is unique in the spec, and always its full ``llm_block_id``. No model is
        loaded: that happens on first use or :meth:`warm_up`. A spec without an embeddings item
        is a :class:`SpecError` naming the skipped items (with a "did you mean" for a misspelt
        ``llm_type``); a misspelt item beside others is logged as a warning.

        ``on_config_error(name, error)``: an item that is valid but cannot be built here (a
        :class:`ConfigurationError`: a key that is not set, say) is reported to it and left out,
        instead of failing the whole spec (what ``validate`` uses to check the rest).
        """
        if isinstance(source, SubjectSpec):
            spec, origin = source, "<spec>"
        else:
            origin, spec = spec_origin(source), load_spec(source)
        require_embeddings(spec, origin)  # a manager with nothing to embed with is a spec error
        for why, near_miss in skipped_items(spec):
            if near_miss:  # a typo of "embeddings" would drop this generator silently; other types are normal
                log.warning("%s: %s; this item builds no generator", origin, why)
        plan = _plan_names(spec, origin)
        manager = cls()
        manager.spec = spec
        unbuilt: set[str] = set()
        for index, item in spec.embedding_items:
            canonical, aliases = plan[index]
            where = f"{origin}: models[{index}] ({item.llm_block_id!r})"
            try:
                gen = build_embeddings_from_model_item(item, where=where)
            except ConfigurationError as exc:
                if on_config_error is None:
                    raise
                on_config_error(canonical, exc)
                unbuilt.update([canonical, *aliases])
                continue
            manager.register_generator(canonical, gen, aliases=aliases)
            manager._block_ids[canonical] = item.llm_block_id
            manager._items[canonical] = item
        for index, item in spec.embedding_items:
            canonical = plan[index][0]
            built = manager._generators.get(canonical)
            if built is None or built.fallback in unbuilt:  # left out, or falls back on one left out
                continue
            gen = built
            if gen.fallback is not None:
                where = f"{origin}: models[{index}] ({item.llm_block_id!r}): llm_parameters.fallback"
                try:
                    manager.set_fallback(canonical, gen.fallback, allow_incompatible=gen.allow_incompatible_fallback)
                except SpecError as exc:
                    raise SpecError(f"{where}: {exc}") from None
        return manager


def fallback_incompatibility(primary: AbstractEmbeddingGenerator, fallback: AbstractEmbeddingGenerator) -> list[str]:
    """Why ``fallback``'s vectors would not live in ``primary``'s space (empty: compatible).

    Decided from the spec alone (no model is loaded): the model identity (``model_id``, else
    the block id's model), the output width (``dimensions``, declared ``dims``) and the
    normalization must agree.
    """
    problems = []
    a, b = primary.model_identity, fallback.model_identity
    if not a or not b:
        unknown = primary if not a else fallback
        problems.append(f"the model of {unknown.name or unknown.provider!r} is not known; declare llm_parameters.model_id")
    elif a != b:
        problems.append(f"model {a!r} vs {b!r}")
    if primary.dimensions != fallback.dimensions:
        problems.append(f"dimensions {primary.dimensions} vs {fallback.dimensions}")
    width_a, width_b = primary.dimensions or primary.dims, fallback.dimensions or fallback.dims
    if width_a is not None and width_b is not None and width_a != width_b:
        problems.append(f"dims {width_a} vs {width_b}")
    if primary.normalize != fallback.normalize:
        problems.append(f"normalize {primary.normalize} vs {fallback.normalize}")
    return problems


def _plan_names(spec: SubjectSpec, origin: str) -> dict[int, tuple[str, list[str]]]:
    """index -> (canonical name, aliases), rejecting collisions with a clear message."""
    items = spec.embedding_items
    prefixes = [item.prefix for _, item in items]
    blocks = [item.llm_block_id for _, item in items]
    owner: dict[str, int] = {}
    plan: dict[int, tuple[str, list[str]]] = {}
    for index, item in items:
        where = f"{origin}: models[{index}] ({item.llm_block_id!r})"
        names = [item.name] if item.name else []
        # Block id and prefix are handles only when unique: a shared one would be ambiguous.
        if blocks.count(item.llm_block_id) == 1:
            if item.llm_block_id not in names:
                names.append(item.llm_block_id)
        elif not item.name:
            raise SpecError(f"{where}: several items use this block id; give each of them a distinct 'name'")
        if prefixes.count(item.prefix) == 1 and item.prefix not in names:
            names.append(item.prefix)
        for n in names:
            if n in owner:
                raise SpecError(
                    f"{where}: name {n!r} is already used by models[{owner[n]}]; give one of them a distinct 'name'"
                )
            owner[n] = index
        plan[index] = (names[0], names[1:])
    return plan
