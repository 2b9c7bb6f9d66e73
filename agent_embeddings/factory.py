"""Turn a ModelItem into a generator, through whichever plugin owns its prefix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .base import AbstractEmbeddingGenerator
from .errors import ConfigurationError, SpecError
from .plugins import get_backend, load_plugins, pm
from .specs import EMBEDDINGS, ModelItem, format_validation_error

__all__ = ["build_embeddings_from_model_item", "coerce_item"]


def coerce_item(item: ModelItem | Mapping[str, Any], *, where: str = "model item") -> ModelItem:
    """Accept a ModelItem or a plain dict (as in the documentation's examples)."""
    if isinstance(item, ModelItem):
        return item
    if not isinstance(item, Mapping):
        raise SpecError(f"{where}: expected a ModelItem or a dict, got {type(item).__name__}")
    try:
        return ModelItem.model_validate(dict(item))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, where=where)) from None


def build_embeddings_from_model_item(
    item: ModelItem | Mapping[str, Any], *, where: str | None = None
) -> AbstractEmbeddingGenerator:
    """Build the generator a ModelItem declares.

    >>> gen = build_embeddings_from_model_item({
    ...     "llm_type": "embeddings",
    ...     "llm_block_id": "hf:sentence-transformers/all-MiniLM-L6-v2",
    ...     "llm_parameters": {"device": "cpu", "batch_size": 64, "normalize": True}})
    >>> gen.provider, gen.model
    ('hf', 'sentence-transformers/all-MiniLM-L6-v2')

    The ``resolve_model_item`` hook may rewrite the item first (e.g. pick a deployment from
    ``llm_selection_query``); then the backend registered for the block id's prefix builds it.
    No model is loaded here: that happens on first use or ``warm_up()``.
    """
    model_item = coerce_item(item, where=where or "model item")
    label = where or repr(model_item.llm_block_id)
    if model_item.llm_type != EMBEDDINGS:
        raise SpecError(
            f"{label}: llm_type is {model_item.llm_type!r}; only {EMBEDDINGS!r} items build embedding generators"
        )
    load_plugins()
    resolved = pm.hook.resolve_model_item(item=model_item)
    if resolved is not None:
        model_item = coerce_item(resolved, where=f"{label} (as rewritten by a resolve_model_item plugin)")
    try:
        backend = get_backend(model_item.prefix)
        generator = backend.factory(model_item)
    except (SpecError, ConfigurationError) as exc:
        if not where:
            raise
        # Backends name the item by its block id; put the spec location in its place.
        message = str(exc).removeprefix(f"{model_item.llm_block_id!r}: ")
        raise type(exc)(f"{label}: {message}") from exc.__cause__
    if not isinstance(generator, AbstractEmbeddingGenerator):
        raise SpecError(
            f"{label}: backend {model_item.prefix!r} (plugin {backend.plugin!r}) returned "
            f"{type(generator).__name__}, not an AbstractEmbeddingGenerator"
        )
    return generator
