"""Serve a manager's generators to others: OpenAI-compatible HTTP and the AIOS gRPC protocol.

Both servers are callers of :class:`~agent_embeddings.EmbeddingGeneratorManager` and hold no
embedding logic of their own. ``agent-embeddings serve`` runs either or both in one process.
"""

from .config import ServerConfig

__all__ = ["ServerConfig"]
