"""Adapters that hand a spec's generator to agent frameworks, each behind its own extra.

* :mod:`.langchain` — ``AgentEmbeddings``, a ``langchain_core.embeddings.Embeddings``
  (``pip install 'agent-embeddings[langchain]'``).
* :mod:`.llama_index` — ``AgentEmbedding``, a LlamaIndex ``BaseEmbedding``
  (``pip install 'agent-embeddings[llama-index]'``).

Both embed queries with ``input_type="query"`` and documents with ``"document"``, so the
prompts a spec declares for each reach the model without glue.
"""

from __future__ import annotations

from ..manager import EmbeddingGeneratorManager
from ..specs import SpecSource

__all__ = ["manager_and_name"]


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
