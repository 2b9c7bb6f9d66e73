"""The serving core: one embeddings request answered from a manager, whatever the transport.

The HTTP app (:mod:`.http_app`) and the gRPC servicer (:mod:`.grpc`) decode their wire format
into an :class:`EmbedQuery`, call :func:`serve_embed` and encode what comes back — a
:class:`ServedEmbeddings`, a :class:`ServeError` (the caller's mistake) or a
:class:`BackendFailed` (the model's). Everything in between exists here once: model resolution,
the request limits, the text checks, the ``dimensions`` truncation and normalization. What
differs between the wires is data: a :class:`Dialect` (their field names and phrasing).

>>> served = await serve_embed(manager, EmbedQuery("hf", ["a text"]), config, HTTP)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import InvalidInputError, UnknownGeneratorError
from ..manager import EmbeddingGeneratorManager
from ..vectors import InputType, check_text, l2_normalize
from .config import ServerConfig

__all__ = ["BackendFailed", "Dialect", "EmbedQuery", "ServeError", "ServedEmbeddings", "serve_embed"]


@dataclass(frozen=True)
class EmbedQuery:
    """An embeddings request as decoded from the wire."""

    model: str
    texts: Sequence[str]
    input_type: InputType | None = None
    #: the caller's truncation (Matryoshka): keep this many leading components; None: the full width
    dimensions: int | None = None
    #: None: as the model's spec item says
    normalize: bool | None = None


@dataclass(frozen=True)
class ServedEmbeddings:
    """The answer, before any encoding: one float32 row per text."""

    model: str  #: the canonical name of the generator asked
    vectors: np.ndarray
    normalized: bool
    prompt_tokens: int | None
    compute_s: float  #: the backend call and the truncation


#: What a refusal is, for the transport to pick its status: a bad request, a request over the
#: server's limits, an unknown model.
Reason = Literal["invalid", "too_large", "not_found"]


class ServeError(Exception):
    """A request refused before any backend call; ``code`` is the machine-readable cause."""

    def __init__(self, reason: Reason, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.param, self.code = reason, message, param, code

    @property
    def error_type(self) -> str:
        """The cause as ``request_errors_total`` labels it on both servers."""
        return self.code or "invalid_request_error"


class BackendFailed(Exception):
    """The backend of ``model`` failed. ``cause``'s text may name internal hosts or quote an
    upstream: each transport decides what of it the caller sees (and logs the rest)."""

    def __init__(self, model: str, cause: Exception) -> None:
        super().__init__(f"the backend of model {model!r} failed: {type(cause).__name__}")
        self.model, self.cause = model, cause


@dataclass(frozen=True)
class Dialect:
    """How a transport words the refusals of :func:`serve_embed` (the checks are the same)."""

    #: the ``server`` label of its metrics
    server: str
    #: the request's texts field (``input[3]``, ``inputs[3]``)
    field: str
    empty: str
    too_many: str  #: {count} {limit}
    too_long: str  #: {where} {length} {limit}
    bad_text: str  #: {error}: check_text's message
    too_wide: str  #: {dimensions} {width} {model}
    unknown_model: str  #: {model} {served}
    #: with an empty model name, the only served model answers; this says why not ({count} {served}).
    #: None: an empty name is an unknown model like any other.
    no_default_model: str | None = None


async def serve_embed(
    manager: EmbeddingGeneratorManager, query: EmbedQuery, config: ServerConfig, dialect: Dialect,
    metrics: Any = None,
) -> ServedEmbeddings:
    """Embed ``query`` with the model it names, within ``config``'s limits; a request that passes
    the checks is counted in ``metrics`` (a :class:`~.metrics.ServerMetrics`) by its size.

    Raises :class:`ServeError` for the caller's mistakes, :class:`BackendFailed` for the backend's.
    With ``dimensions``, vectors come raw from the model, are shortened, then normalized (when
    normalization is on): a shortened unit vector is unit length again, as on OpenAI's API.
    """
    name = resolve_model(manager, query.model, dialect)
    texts = checked_texts(query.texts, config, dialect)
    if metrics is not None:
        metrics.child(metrics.batch, dialect.server).observe(len(texts))
    generator = manager.get(name)
    normalize = generator.normalize if query.normalize is None else query.normalize
    dimensions = query.dimensions
    known_width = generator.output_dims
    if dimensions is not None and known_width is not None and dimensions > known_width:  # before any work
        raise _too_wide(dialect, dimensions, known_width, name)
    started = time.perf_counter()
    try:
        result = await manager.aembed(
            name, texts, normalize=normalize if dimensions is None else False, input_type=query.input_type
        )
    except Exception as exc:  # noqa: BLE001 - the transport maps it; CancelledError passes
        raise BackendFailed(name, exc) from exc
    vectors = result.vectors
    if dimensions is not None:
        width = vectors.shape[1]
        if dimensions > width:
            raise _too_wide(dialect, dimensions, width, name)
        vectors = vectors[:, :dimensions] if dimensions < width else vectors
        if normalize:
            vectors = l2_normalize(vectors)
    return ServedEmbeddings(name, vectors, normalize, result.prompt_tokens, time.perf_counter() - started)


def resolve_model(manager: EmbeddingGeneratorManager, model: str, dialect: Dialect) -> str:
    """The canonical name of ``model`` (a name or an alias); an unknown one lists the served names."""
    if not model and dialect.no_default_model is not None:
        names = manager.names()
        if len(names) == 1:
            return names[0]
        served = ", ".join(names) or "none"
        raise ServeError("invalid", dialect.no_default_model.format(count=len(names), served=served))
    try:
        return manager.resolve(model)
    except UnknownGeneratorError:
        served = ", ".join(manager.names()) or "none"
        raise ServeError("not_found", dialect.unknown_model.format(model=model, served=served), param="model",
                         code="model_not_found") from None


def checked_texts(texts: Sequence[str], config: ServerConfig, dialect: Dialect) -> Sequence[str]:
    """``texts`` within the server's limits, each a text a model takes (messages name the input)."""
    field = dialect.field
    if not texts:
        raise ServeError("invalid", dialect.empty, param=field)
    if len(texts) > config.max_inputs:
        raise ServeError("too_large", dialect.too_many.format(count=len(texts), limit=config.max_inputs),
                         param=field, code="too_many_inputs")
    limit = config.max_input_chars
    for i, text in enumerate(texts):
        where = f"{field}[{i}]"
        if limit is not None and len(text) > limit:  # before check_text: a long text is not scanned
            raise ServeError("too_large", dialect.too_long.format(where=where, length=len(text), limit=limit),
                             param=field, code="input_too_long")
        try:
            check_text(text, where=where)
        except InvalidInputError as exc:
            raise ServeError("invalid", dialect.bad_text.format(error=exc), param=field) from None
    return texts


def _too_wide(dialect: Dialect, dimensions: int, width: int, name: str) -> ServeError:
    message = dialect.too_wide.format(dimensions=dimensions, width=width, model=name)
    return ServeError("invalid", message, param="dimensions")
