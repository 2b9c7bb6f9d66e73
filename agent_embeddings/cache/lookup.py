"""The cache on a generator's call path: look up, compute only the misses, store them.

The stores themselves (memory LRU, SQLite on disk) live in :mod:`.stores`;
this module is what a generator does with one. A key is the hash of the generator's cache
namespace (model identity, dims, ``dimensions``, normalization, settings) and the text.

A hit of another width than the generator's (a cache shared with an older deployment of the
"same" model) is a miss: it is recomputed and overwritten for its own key alone; the entries
of other generators sharing the store are never touched.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from ..flow import Flow, Step
from ..results import Embeddings
from .stores import EmbeddingCache

__all__ = ["cached", "keys_for"]

log = logging.getLogger("agent_embeddings.cache")

Found = list[np.ndarray | None]
T = TypeVar("T")


def keys_for(namespace: str, texts: list[str]) -> list[str]:
    """One key per text (``surrogatepass``: any str hashes, valid Unicode or not)."""
    prefix = namespace + "\0"
    return [hashlib.sha256((prefix + t).encode("utf-8", "surrogatepass")).hexdigest() for t in texts]


def _lookup(cache: EmbeddingCache, namespace: str, texts: list[str]) -> tuple[list[str], Found]:
    keys = keys_for(namespace, texts)
    found = cache.get_many(keys)
    present = [v for v in found if v is not None]
    # A damaged or foreign entry is a miss. One check for the batch (the disk cache has checked its
    # rows already); row by row only when it fails: 64 per-row checks cost ~300 us, one ~20 us.
    if present and not (all(v.ndim == 1 for v in present) and np.isfinite(np.concatenate(present)).all()):
        for i, vec in enumerate(found):
            if vec is not None and (vec.ndim != 1 or not np.isfinite(vec).all()):
                found[i] = None
    return keys, found


def _stale(found: Found, width: int | None, who: str) -> Found:
    """Hits of another width than ``width`` (or, width unknown, hits that disagree) become misses."""
    widths = {v.shape[0] for v in found if v is not None}
    if width is None and len(widths) > 1:
        return [None] * len(found)
    if width is None or widths <= {width}:
        return found
    log.warning("%s: cached vectors of width %s, not %d; recomputing them", who, sorted(widths), width)
    return [v if v is None or v.shape[0] == width else None for v in found]


def _misses(texts: list[str], found: Found) -> list[str]:
    """The distinct texts not found, in first-seen order (duplicates are computed once)."""
    return list(dict.fromkeys(t for t, v in zip(texts, found) if v is None))


def _assemble(
    cache: EmbeddingCache, texts: list[str], keys: list[str], found: Found, misses: list[str],
    computed: Embeddings | None, name: str | None,
) -> tuple[Embeddings, list[tuple[str, np.ndarray]]]:
    """Hits and computed misses in input order, and the entries to store."""
    width = computed.vectors.shape[1] if computed is not None else next(v.shape[0] for v in found if v is not None)
    matrix = np.empty((len(texts), width), dtype=np.float32)
    row_of = {t: i for i, t in enumerate(misses)}
    hits = 0
    for i, (text, vec) in enumerate(zip(texts, found)):
        if vec is not None:
            matrix[i] = vec
            hits += 1
        else:
            assert computed is not None
            matrix[i] = computed.vectors[row_of[text]]
    store: list[tuple[str, np.ndarray]] = []
    if computed is not None:
        key_of = {t: k for t, k, v in zip(texts, keys, found) if v is None}
        store = [(key_of[t], computed.vectors[j]) for j, t in enumerate(misses)]
    tokens = computed.prompt_tokens if computed is not None else 0
    return Embeddings(matrix, tokens, name, cache_hits=hits), store


def cached(
    cache: EmbeddingCache, namespace: str, texts: list[str], width: int | None,
    compute: Callable[[list[str]], Flow[Embeddings]], *, who: str, name: str | None,
) -> Flow[Embeddings]:
    """Embed ``texts`` through ``cache`` (a flow, :mod:`.flow`): ``compute`` sees only the misses,
    each distinct text once. A disk store's file I/O runs off the event loop on the async path."""

    def io(fn: Callable[[], T]) -> Step[T]:
        offload = cache.kind != "memory"
        return Step(fn, (lambda: asyncio.to_thread(fn)) if offload else (lambda: _done(fn())))

    keys, found = yield io(lambda: _lookup(cache, namespace, texts))
    found = _stale(found, width, who)
    misses = _misses(texts, found)
    computed = (yield from compute(misses)) if misses else None
    if computed is not None:
        stale = _stale(found, computed.vectors.shape[1], who)
        if stale is not found:  # the width learned from this call: recompute what disagrees, once
            found, misses = stale, _misses(texts, stale)
            computed = yield from compute(misses)
    result, store = _assemble(cache, texts, keys, found, misses, computed, name)
    yield io(lambda: cache.put_many(store))
    return result


async def _done(value: T) -> T:
    return value
