"""LangChain embeddings from a subject spec's generator.

>>> from agent_embeddings.integrations.langchain import AgentEmbeddings
>>> from langchain_core.vectorstores import InMemoryVectorStore
>>> emb = AgentEmbeddings.from_spec("specs/default.json", "hf-minilm")  # doctest: +SKIP
>>> store = InMemoryVectorStore(emb)                                     # doctest: +SKIP

``embed_query`` embeds with ``input_type="query"``, ``embed_documents`` with ``"document"``;
the async methods use the manager's async API (no thread wrapped around the sync one).
"""

from __future__ import annotations

try:
    from langchain_core.embeddings import Embeddings
except ImportError as exc:  # pragma: no cover - the hint is the point
    raise ImportError(
        "agent_embeddings.integrations.langchain needs langchain-core: pip install 'agent-embeddings[langchain]'"
    ) from exc

from ..manager import EmbeddingGeneratorManager
from ..specs import SpecSource
from ..vectors import check_text
from . import manager_and_name, texts_argument

__all__ = ["AgentEmbeddings"]


class AgentEmbeddings(Embeddings):
    """``langchain_core.embeddings.Embeddings`` over generator ``name`` of ``manager``."""

    def __init__(self, manager: EmbeddingGeneratorManager, name: str) -> None:
        self.manager = manager
        self.name = manager.resolve(name)  # an unknown name fails now, listing the known ones

    @classmethod
    def from_spec(cls, spec: SpecSource, name: str | None = None) -> AgentEmbeddings:
        """Build the spec's generators and use ``name`` (or the only one)."""
        return cls(*manager_and_name(spec, name))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        items = texts_argument(texts, method="AgentEmbeddings.embed_documents", single="embed_query")
        return self.manager.generate_batch(self.name, items, input_type="document")

    def embed_query(self, text: str) -> list[float]:
        check_text(text, where="AgentEmbeddings.embed_query: text")
        return self.manager.generate(self.name, text, input_type="query")

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        items = texts_argument(texts, method="AgentEmbeddings.aembed_documents", single="aembed_query")
        return await self.manager.agenerate_batch(self.name, items, input_type="document")

    async def aembed_query(self, text: str) -> list[float]:
        check_text(text, where="AgentEmbeddings.aembed_query: text")
        return await self.manager.agenerate(self.name, text, input_type="query")

    def __repr__(self) -> str:
        return f"AgentEmbeddings(name={self.name!r})"
