"""Opt-in vector caches (``llm_parameters.cache``): a bounded in-memory LRU or SQLite on disk.

The generator computes one key per text from the model identity, the declared dims and
``dimensions``, the normalization and the text (see ``AbstractEmbeddingGenerator``); a batch
with some cached texts sends only the misses to the backend. A disk cache that is corrupt,
unreadable or unwritable logs a warning and the call computes its vectors as if there were
no cache: a cache never fails a call.

>>> cache = MemoryCache(max_entries=2)
>>> cache.put_many([("a", np.ones(3, np.float32)), ("b", np.zeros(3, np.float32))])
>>> [v is not None for v in cache.get_many(["a", "c"])], cache.stats()["hits"], cache.stats()["misses"]
([True, False], 1, 1)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

__all__ = ["CacheConfig", "DiskCache", "EmbeddingCache", "MemoryCache", "default_cache_path", "make_cache"]

log = logging.getLogger("agent_embeddings.cache")

# Seconds between two attempts to reopen a disk cache that failed, and between two warnings.
_RETRY_OPEN_S = 30.0


class CacheConfig(BaseModel):
    """``llm_parameters.cache``: ``{"kind": "memory", "max_entries": 10000}`` or ``{"kind": "disk", "path": ...}``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    kind: Literal["memory", "disk"] = Field(default="memory", description="'memory' (LRU) or 'disk' (SQLite).")
    max_entries: PositiveInt = Field(default=10_000, description="Vectors kept; the least recently used go first.")
    path: str | None = Field(
        default=None,
        description="SQLite file of a disk cache (default: $AGENT_EMBEDDINGS_CACHE_DIR or "
        "~/.cache/agent-embeddings, file embeddings.sqlite3). Several generators and processes may share it.",
    )


def default_cache_path() -> Path:
    base = os.environ.get("AGENT_EMBEDDINGS_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "agent-embeddings"
    return root / "embeddings.sqlite3"


class EmbeddingCache:
    """Interface of a vector cache: ``get_many``, ``put_many``, ``stats``, ``clear``, ``close``."""

    kind = "none"

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self._counter_lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        raise NotImplementedError

    def put_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        raise NotImplementedError

    def size(self) -> int:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _count(self, found: list[np.ndarray | None]) -> list[np.ndarray | None]:
        hits = sum(v is not None for v in found)
        with self._counter_lock:
            self.hits += hits
            self.misses += len(found) - hits
        return found

    def stats(self) -> dict[str, Any]:
        """Hits, misses, entries held, the bound and the errors met (disk)."""
        return {"kind": self.kind, "hits": self.hits, "misses": self.misses, "size": self.size(),
                "max_entries": self.max_entries, "errors": self.errors}


class MemoryCache(EmbeddingCache):
    """A bounded LRU in this process (thread-safe)."""

    kind = "memory"

    def __init__(self, max_entries: int = 10_000) -> None:
        super().__init__(max_entries)
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        with self._lock:
            for key in keys:
                vec = self._data.get(key)
                if vec is not None:
                    self._data.move_to_end(key)
                out.append(vec)
        return self._count(out)

    def put_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        with self._lock:
            for key, vec in items:
                stored = np.array(vec, dtype=np.float32, copy=True)
                stored.flags.writeable = False
                self._data[key] = stored
                self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def size(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class DiskCache(EmbeddingCache):
    """Vectors in a SQLite file (standard library; WAL mode, safe across threads and processes).

    Bounded by ``max_entries``: the oldest written entries are dropped first. Every failure
    (a corrupt file, a read-only or full disk, a path that cannot be created) is logged as a
    warning and reported as misses / skipped writes; the file is reopened at most every 30 s.
    """

    kind = "disk"

    def __init__(self, path: str | os.PathLike[str] | None = None, max_entries: int = 100_000) -> None:
        super().__init__(max_entries)
        self.path = Path(path).expanduser() if path else default_cache_path()
        self._lock = threading.Lock()
        self._conn: Any = None
        self._entries = 0
        self._down_until = 0.0
        self._warned_at = -_RETRY_OPEN_S

    # -- connection --------------------------------------------------------------------------
    def _connect(self) -> Any:
        """The open connection, opening it if needed; None while the cache is out of order."""
        if self._conn is not None:
            return self._conn
        if time.monotonic() < self._down_until:
            return None
        import sqlite3

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=5.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dims INTEGER NOT NULL, data BLOB NOT NULL)"
            )
            self._entries = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            self._failed("open", exc)
            return None
        self._conn = conn
        return conn

    def _failed(self, what: str, exc: BaseException) -> None:
        """Log (at most every 30 s), count, close the connection and rest for a while."""
        self.errors += 1
        now = time.monotonic()
        if now - self._warned_at >= _RETRY_OPEN_S:
            self._warned_at = now
            log.warning(
                "embedding cache %s: cannot %s (%s: %s); computing vectors without it",
                self.path, what, type(exc).__name__, exc,
            )
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
        self._down_until = now + _RETRY_OPEN_S

    # -- the interface -----------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        import sqlite3

        found: dict[str, np.ndarray] = {}
        with self._lock:
            conn = self._connect()
            if conn is not None:
                try:
                    unique = list(dict.fromkeys(keys))
                    for start in range(0, len(unique), 500):
                        part = unique[start : start + 500]
                        rows = conn.execute(
                            f"SELECT key, dims, data FROM vectors WHERE key IN ({','.join('?' * len(part))})", part
                        ).fetchall()
                        for key, dims, data in rows:
                            if not isinstance(data, bytes) or dims <= 0 or len(data) != dims * 4:
                                self.errors += 1  # a damaged entry: a miss, overwritten below
                                continue
                            found[key] = np.frombuffer(data, dtype="<f4")
                except (sqlite3.Error, OSError) as exc:
                    self._failed("read", exc)
                    found = {}
        return self._count([found.get(k) for k in keys])

    def put_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        import sqlite3

        if not items:
            return
        rows = [(key, int(vec.shape[0]), np.asarray(vec, dtype="<f4").tobytes()) for key, vec in items]
        with self._lock:
            conn = self._connect()
            if conn is None:
                return
            try:
                conn.execute("BEGIN")
                conn.executemany("INSERT OR REPLACE INTO vectors (key, dims, data) VALUES (?, ?, ?)", rows)
                self._entries += len(rows)
                if self._entries > self.max_entries:
                    self._entries = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
                    excess = self._entries - self.max_entries
                    if excess > 0:
                        conn.execute(
                            "DELETE FROM vectors WHERE rowid IN (SELECT rowid FROM vectors ORDER BY rowid LIMIT ?)",
                            (excess,),
                        )
                        self._entries -= excess
                conn.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                try:
                    conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001
                    pass
                self._failed("write", exc)

    def size(self) -> int:
        return self._entries

    def clear(self) -> None:
        import sqlite3

        with self._lock:
            conn = self._connect()
            if conn is None:
                return
            try:
                conn.execute("DELETE FROM vectors")
                self._entries = 0
            except (sqlite3.Error, OSError) as exc:
                self._failed("clear", exc)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def make_cache(config: CacheConfig | dict[str, Any] | bool | None) -> EmbeddingCache | None:
    """The cache a ``cache`` setting asks for (None/False: no cache, True: the default memory LRU)."""
    if config is None or config is False:
        return None
    if config is True:
        config = CacheConfig()
    elif not isinstance(config, CacheConfig):
        config = CacheConfig.model_validate(dict(config))
    if config.kind == "disk":
        return DiskCache(config.path, config.max_entries)
    return MemoryCache(config.max_entries)
