"""A LlamaIndex embedding model from a subject spec's generator.

>>> from agent_embeddings.integrations.llama_index import AgentEmbedding
>>> from llama_index.core import VectorStoreIndex, Document
>>> emb = AgentEmbedding.from_spec("specs/default.json", "hf-minilm")              # doctest: +SKIP
>>> index = VectorStoreIndex.from_documents([Document(text="...")], embed_model=emb)  # doctest: +SKIP

Queries are embedded with ``input_type="query"``, texts (nodes) with ``"document"``. LlamaIndex
cuts each call into batches of ``embed_batch_size`` before they reach the manager; the default here
is the largest LlamaIndex allows (2048, as many nodes as an index inserts at once), so a call
reaches the manager whole, which sorts the texts by length and packs its own batches by tokens.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
except ImportError as exc:  # pragma: no cover - the hint is the point
    raise ImportError(
        "agent_embeddings.integrations.llama_index needs llama-index-core: "
        "pip install 'agent-embeddings[llama-index]'"
    ) from exc
from pydantic import PrivateAttr

from ..manager import EmbeddingGeneratorManager
from ..specs import SpecSource
from ..vectors import check_text
from . import manager_and_name, texts_argument

__all__ = ["AgentEmbedding"]

#: The largest ``embed_batch_size`` LlamaIndex accepts (its field's bound: 2048 today).
MAX_EMBED_BATCH_SIZE: int = next(
    (m.le for m in BaseEmbedding.model_fields["embed_batch_size"].metadata if getattr(m, "le", None)), 2048
)


class AgentEmbedding(BaseEmbedding):
    """``BaseEmbedding`` over generator ``name`` (LlamaIndex's ``model_name``) of ``manager``."""

    _manager: EmbeddingGeneratorManager = PrivateAttr()

    def __init__(
        self, manager: EmbeddingGeneratorManager, name: str, *, embed_batch_size: int | None = None, **kwargs: Any
    ) -> None:
        # Default: whole calls to the manager. Cut into batches of 64 (the generator's batch size)
        # 1,000 texts of mixed length ran at 20 texts/s against manager.encode's 56: each cut was
        # padded to its longest text, where the manager sorts the whole call by length first.
        if embed_batch_size is None:
            embed_batch_size = MAX_EMBED_BATCH_SIZE
        super().__init__(model_name=manager.resolve(name), embed_batch_size=embed_batch_size, **kwargs)
        self._manager = manager

    @classmethod
    def from_spec(cls, spec: SpecSource, name: str | None = None, **kwargs: Any) -> AgentEmbedding:
        """Build the spec's generators and use ``name`` (or the only one)."""
        manager, resolved = manager_and_name(spec, name)
        return cls(manager, resolved, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "AgentEmbedding"

    # LlamaIndex's batch methods iterate their argument before any of ours runs: "abc" became
    # three one-character texts, None and a generator raw TypeErrors. Checked here first.
    def get_text_embedding_batch(self, texts: list[str], show_progress: bool = False, **kwargs: Any) -> list[Any]:
        items = texts_argument(texts, method="AgentEmbedding.get_text_embedding_batch", single="get_text_embedding")
        return super().get_text_embedding_batch(items, show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Any]:
        items = texts_argument(texts, method="AgentEmbedding.aget_text_embedding_batch", single="aget_text_embedding")
        return await super().aget_text_embedding_batch(items, show_progress, **kwargs)

    def _get_query_embedding(self, query: str) -> list[float]:
        check_text(query, where="AgentEmbedding.get_query_embedding: query")
        return self._manager.generate(self.model_name, query, input_type="query")

    async def _aget_query_embedding(self, query: str) -> list[float]:
        check_text(query, where="AgentEmbedding.aget_query_embedding: query")
        return await self._manager.agenerate(self.model_name, query, input_type="query")

    def _get_text_embedding(self, text: str) -> list[float]:
        check_text(text, where="AgentEmbedding.get_text_embedding: text")
        return self._manager.generate(self.model_name, text, input_type="document")

    async def _aget_text_embedding(self, text: str) -> list[float]:
        check_text(text, where="AgentEmbedding.aget_text_embedding: text")
        return await self._manager.agenerate(self.model_name, text, input_type="document")

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._manager.generate_batch(self.model_name, texts, input_type="document")

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await self._manager.agenerate_batch(self.model_name, texts, input_type="document")
