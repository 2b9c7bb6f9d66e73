"""Adapters that hand a spec's generator to agent frameworks, each behind its own extra.

* :mod:`.langchain` — ``AgentEmbeddings``, a ``langchain_core.embeddings.Embeddings``
  (``pip install 'agent-embeddings[langchain]'``).
* :mod:`.llama_index` — ``AgentEmbedding``, a LlamaIndex ``BaseEmbedding``
  (``pip install 'agent-embeddings[llama-index]'``).

Both embed queries with ``input_type="query"`` and documents with ``"document"``, so the
prompts a spec declares for each reach the model without glue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

from ..errors import InvalidInputTypeError
from ..manager import EmbeddingGeneratorManager
from ..specs import SpecSource
from ..vectors import check_text

__all__ = ["manager_and_name", "texts_argument"]


def texts_argument(texts: object, *, method: str, single: str) -> list[str]:
    """The ``texts`` of a framework's batch ``method``, checked, as a list.

    A list, a tuple, a generator: any ordered iterable of strings. A single string is refused
    (frameworks iterate it character by character: "abc" gave three embeddings), as are None, a
    number, a mapping or a set (no order to match vectors to texts), with an
    :class:`~agent_embeddings.errors.InvalidInputTypeError` (also a ``TypeError``) naming ``method``.
    """
    expected = f"{method}: texts must be a list of strings"
    if isinstance(texts, (str, bytes)):
        raise InvalidInputTypeError(f"{expected}, got a single {type(texts).__name__}; use {single}() for one text")
    if not isinstance(texts, Iterable) or isinstance(texts, (Mapping, AbstractSet)):
        raise InvalidInputTypeError(f"{expected}, got {type(texts).__name__}")
    items = list(texts)
    for index, text in enumerate(items):
        check_text(text, where=f"{method}: texts[{index}]")
    return items


def manager_and_name(spec: SpecSource, name: str | None) -> tuple[EmbeddingGeneratorManager, str]:
    """A manager built from ``spec`` and the generator to use: ``name``, or the spec's only one."""
    manager = EmbeddingGeneratorManager.from_subject_spec(spec)
    if name is None:
        names = manager.names()
        if len(names) != 1:
            from ..errors import UnknownGeneratorError

            raise UnknownGeneratorError(
                f"the spec has {len(names)} embedding generators ({', '.join(names) or 'none'}); name one"
            )
        name = names[0]
    return manager, manager.resolve(name)
