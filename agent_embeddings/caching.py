"""The former name of :mod:`agent_embeddings.cache.lookup` (kept so that imports keep working)."""

from .cache.lookup import cached, keys_for

__all__ = ["cached", "keys_for"]
