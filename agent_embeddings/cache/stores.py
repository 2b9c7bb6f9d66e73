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
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

__all__ = ["CacheConfig", "DiskCache", "EmbeddingCache", "MemoryCache", "cache_dir", "default_cache_path", "make_cache"]

log = logging.getLogger("agent_embeddings.cache")

# Seconds between two attempts to reopen a disk cache that failed, and between two warnings.
_RETRY_OPEN_S = 30.0
# Keys per SQL statement: below SQLite's default limit of bound variables on old builds (999).
_SQL_VARIABLES = 500


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


def cache_dir() -> Path:
    """The folder of everything the SDK caches on disk: ``$AGENT_EMBEDDINGS_CACHE_DIR``, else
    ``~/.cache/agent-embeddings`` (vectors in ``embeddings.sqlite3``, ONNX exports in ``onnx/``)."""
    base = os.environ.get("AGENT_EMBEDDINGS_CACHE_DIR")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "agent-embeddings"


def default_cache_path() -> Path:
    return cache_dir() / "embeddings.sqlite3"


class EmbeddingCache:
    """Interface of a vector cache: ``get_many``, ``put_many``, ``stats``, ``clear``, ``close``."""

    kind = "none"

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.corrupt = 0  # stored vectors that failed their checks (disk): served as misses
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
        """Hits, misses, entries held, the bound, the errors met and the corrupt entries found (disk)."""
        return {"kind": self.kind, "hits": self.hits, "misses": self.misses, "size": self.size(),
                "max_entries": self.max_entries, "errors": self.errors, "corrupt": self.corrupt}


class MemoryCache(EmbeddingCache):
    """A bounded LRU in this process (cachetools' ``LRUCache`` behind a lock: thread-safe)."""

    kind = "memory"

    def __init__(self, max_entries: int = 10_000) -> None:
        from cachetools import LRUCache

        super().__init__(max_entries)
        self._data: LRUCache[str, np.ndarray] = LRUCache(maxsize=max_entries)
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        with self._lock:  # a get refreshes the entry (LRU)
            out = [self._data.get(key) for key in keys]
        return self._count(out)

    def put_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        with self._lock:
            for key, vec in items:
                stored = np.array(vec, dtype=np.float32, copy=True)
                stored.flags.writeable = False
                self._data[key] = stored

    def size(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class DiskCache(EmbeddingCache):
    """Vectors in a SQLite file (standard library; WAL mode, safe across threads and processes).

    Bounded by ``max_entries``: the least recently used entries (read or written) are dropped
    first; every read refreshes the entries it finds, so a hot vector stays. SQLite checks no
    page, so each row carries a CRC-32 of its key and bytes: a row that fails it (a flipped bit on
    disk), holds a NaN or infinity, or whose bytes do not match its width is a miss, counted in
    ``stats()["corrupt"]`` (and ``errors``), and is rewritten when the vector is computed again.
    Rows written before checksums existed are misses too, rewritten with one. Every failure
    (a corrupt file, a read-only or full disk, a path that cannot be created) is logged as a
    warning and reported as misses / skipped writes; the file is reopened at most every 30 s.
    """

    kind = "disk"

    def __init__(self, path: str | os.PathLike[str] | None = None, max_entries: int = 100_000) -> None:
        super().__init__(max_entries)
        self.path = Path(path).expanduser() if path else default_cache_path()
        self._lock = threading.Lock()
        self._conn: Any = None
        self._down_until = 0.0
        self._warned_at = -_RETRY_OPEN_S
        self._corrupt_warned_at = -_RETRY_OPEN_S

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
                "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dims INTEGER NOT NULL, data BLOB NOT NULL,"
                " used INTEGER NOT NULL DEFAULT 0, crc INTEGER)"
            )
            columns = {row[1] for row in conn.execute("PRAGMA table_info(vectors)")}
            if "used" not in columns:  # a file written before eviction was LRU
                conn.execute("ALTER TABLE vectors ADD COLUMN used INTEGER NOT NULL DEFAULT 0")
            if "crc" not in columns:  # a file written before checksums: its rows read as misses
                conn.execute("ALTER TABLE vectors ADD COLUMN crc INTEGER")
            conn.execute("CREATE INDEX IF NOT EXISTS vectors_used ON vectors (used)")
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
                    for start in range(0, len(unique), _SQL_VARIABLES):
                        part = unique[start : start + _SQL_VARIABLES]
                        rows = conn.execute(
                            f"SELECT key, dims, data, crc FROM vectors WHERE key IN ({','.join('?' * len(part))})",
                            part,
                        ).fetchall()
                        for key, dims, data, crc in rows:
                            vec = self._verified(key, dims, data, crc)
                            if vec is not None:
                                found[key] = vec
                    self._drop_non_finite(found)
                except (sqlite3.Error, OSError) as exc:
                    self._failed("read", exc)
                    found = {}
                else:
                    self._touch(conn, list(found))
        return self._count([found.get(k) for k in keys])

    def _verified(self, key: str, dims: Any, data: Any, crc: Any) -> np.ndarray | None:
        """The row's vector, or None (a miss) when it has no checksum or fails it."""
        if crc is None:  # written before checksums: unverified, recomputed and rewritten with one
            return None
        if isinstance(data, bytes) and isinstance(dims, int) and dims > 0 and len(data) == dims * 4:
            if crc == _checksum(key, data):
                return np.frombuffer(data, dtype="<f4")
        self._corrupt_row()  # damaged on disk: a miss, overwritten when the vector is computed again
        return None

    def _drop_non_finite(self, found: dict[str, np.ndarray]) -> None:
        """Drop rows holding NaN or infinity: one check for the whole batch, one per row only if it fails."""
        if found and not np.isfinite(np.concatenate(list(found.values()))).all():
            for key in [k for k, v in found.items() if not np.isfinite(v).all()]:
                del found[key]
                self._corrupt_row()

    def _corrupt_row(self) -> None:
        self.corrupt += 1
        self.errors += 1
        now = time.monotonic()
        if now - self._corrupt_warned_at >= _RETRY_OPEN_S:  # at most every 30 s, as other failures
            self._corrupt_warned_at = now
            log.warning("embedding cache %s: a stored vector fails its checks (corrupt); recomputing it", self.path)

    def put_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        """Store (or overwrite, key by key) vectors; one transaction, then evict the least recently used."""
        import sqlite3

        if not items:
            return
        stamp = time.time_ns()
        latest = {key: vec for key, vec in items}  # a key given twice: its last vector
        rows = []
        for key, vec in latest.items():
            data = np.asarray(vec, dtype="<f4").tobytes()
            rows.append((key, int(vec.shape[0]), data, stamp, _checksum(key, data)))
        with self._lock:
            conn = self._connect()
            if conn is None:
                return
            try:
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT OR REPLACE INTO vectors (key, dims, data, used, crc) VALUES (?, ?, ?, ?, ?)", rows
                )
                excess = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] - self.max_entries
                if excess > 0:
                    conn.execute(
                        "DELETE FROM vectors WHERE key IN (SELECT key FROM vectors ORDER BY used, rowid LIMIT ?)",
                        (excess,),
                    )
                conn.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                self._rollback(conn)
                self._failed("write", exc)

    def size(self) -> int:
        """Entries in the file now (all generators and processes sharing it; 0 while it is out of order)."""
        import sqlite3

        with self._lock:
            conn = self._connect()
            if conn is None:
                return 0
            try:
                return int(conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
            except (sqlite3.Error, OSError) as exc:
                self._failed("count", exc)
                return 0

    def clear(self) -> None:
        """Delete every entry of the file, those of other generators and processes sharing it included.

        Generators never call this: a stale entry is overwritten for its own key alone.
        """
        import sqlite3

        with self._lock:
            conn = self._connect()
            if conn is None:
                return
            try:
                conn.execute("DELETE FROM vectors")
            except (sqlite3.Error, OSError) as exc:
                self._failed("clear", exc)

    def _touch(self, conn: Any, keys: list[str]) -> None:
        """Mark ``keys`` as just used (LRU). A file we may only read still serves its hits."""
        import sqlite3

        if not keys:
            return
        stamp = time.time_ns()
        try:
            conn.execute("BEGIN")
            for start in range(0, len(keys), _SQL_VARIABLES):
                part = keys[start : start + _SQL_VARIABLES]
                conn.execute(f"UPDATE vectors SET used = ? WHERE key IN ({','.join('?' * len(part))})", [stamp, *part])
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            self._rollback(conn)
            log.debug("embedding cache %s: cannot refresh entries (%s); eviction order unchanged", self.path, exc)

    @staticmethod
    def _rollback(conn: Any) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - the connection is dropped right after
            pass

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def _checksum(key: str, data: bytes) -> int:
    """CRC-32 of a row's key and vector bytes: catches every flipped bit and burst up to 32 bits,
    and a row's bytes landing under another key; ~0.06 ms per 64 rows of 384 floats (BLAKE2b: ~0.26 ms)."""
    return zlib.crc32(data, zlib.crc32(key.encode("utf-8", "surrogatepass")))


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
