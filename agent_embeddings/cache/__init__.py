"""The opt-in vector cache: :mod:`.stores` (where vectors are kept: memory LRU, SQLite on disk) and
:mod:`.lookup` (what a generator's call does with a store: look up, compute the misses, store them).

>>> from agent_embeddings.cache import MemoryCache
>>> MemoryCache().kind
'memory'
"""

from .lookup import cached, keys_for
from .stores import CacheConfig, DiskCache, EmbeddingCache, MemoryCache, cache_dir, default_cache_path, make_cache

__all__ = [
    "CacheConfig", "DiskCache", "EmbeddingCache", "MemoryCache", "cache_dir", "cached", "default_cache_path",
    "keys_for", "make_cache",
]
