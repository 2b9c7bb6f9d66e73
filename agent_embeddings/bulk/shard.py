"""One shard: check its rows, embed its unique texts in length order, write it atomically.

Both engines call :func:`embed_shard` then :func:`write_shard`; only who calls them differs
(the local loop, or a Ray Data actor).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import BulkOutputError, CorpusError, EmbeddingContractError
from .donor import Donor, content_hashes
from .source import Shard

__all__ = ["ShardResult", "embed_shard", "shard_name", "write_shard"]

# How many skipped ids a shard remembers (its footer stays small; the count is always exact).
MAX_SKIPPED_IDS = 1000
META_KEY = b"agent_embeddings"
_HASH_ROWS = 4096  # texts hashed per slice: Python strings for one slice at a time


def shard_name(key: str, index: int) -> str:
    """``part-<input>-<index>.parquet``: the input's key keeps the shards of several inputs apart."""
    return f"part-{key[:8]}-{index:06d}.parquet"


@dataclass
class ShardResult:
    """What a written shard holds: rows written, unique texts embedded, rows skipped (and which),
    and, in a sync, rows whose vectors were copied from the previous snapshot (``reused``) and
    rows embedded because their text changed (``changed``) or their id is new (``added``)."""

    index: int
    rows: int
    unique: int = 0
    skipped: int = 0
    skipped_ids: list[Any] = field(default_factory=list)
    reused: int = 0
    changed: int = 0
    added: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "rows": self.rows, "unique": self.unique, "skipped": self.skipped,
                "skipped_ids": self.skipped_ids, "reused": self.reused, "changed": self.changed, "added": self.added}


def _problems(shard: Shard, text_column: str, id_column: str | None) -> list[tuple[int, str]]:
    """(row offset, problem) for every row that cannot be embedded."""
    pc = require("pyarrow.compute", "bulk")
    texts = shard.texts  # a string column: the corpus casts every file's text column to one
    bad: dict[int, str] = {}
    for i in np.flatnonzero(np.asarray(pc.fill_null(pc.equal(pc.utf8_length(texts), 0), False))):
        bad[int(i)] = "text is empty"
    for i in np.flatnonzero(np.asarray(texts.is_null())):
        bad[int(i)] = "text is null"
    if id_column is not None:
        for i in np.flatnonzero(np.asarray(shard.ids.is_null())):
            bad.setdefault(int(i), "id is null")
    return sorted(bad.items())


def _unique_in_length_order(texts: Any) -> tuple[Any, np.ndarray]:
    """Unique texts sorted by length (an Arrow array: less padding per batch), and each row's index
    into them. Arrow compute, not a Python dict: a shard's texts become Python strings one slice
    at a time, when the model needs them."""
    pc = require("pyarrow.compute", "bulk")
    unique = pc.unique(texts)
    ordered = unique.take(pc.sort_indices(pc.utf8_length(unique)))
    rows = np.asarray(pc.index_in(texts, value_set=ordered), dtype=np.int64)
    return ordered, rows


def embed_shard(
    shard: Shard,
    embed: Callable[[list[str]], np.ndarray],
    *,
    text_column: str,
    id_column: str | None,
    skip_invalid: bool,
    dims: int,
    step: int,
    concurrency: int = 1,
    progress: Callable[[int], None] | None = None,
    prompt: str | None = None,
    donor: Donor | None = None,
) -> tuple[Any, ShardResult]:
    """Embed one shard; returns the Arrow table to write (``id``, ``content_hash``, ``embedding``, the
    kept columns) and its result.

    ``embed`` maps a list of texts to a float32 matrix (the generator, through the manager); only
    rows that ``donor`` (the previous snapshot) does not hold with the same id and content hash
    reach it. Bad rows fail the shard (naming column, id and problem) unless ``skip_invalid``.
    """
    pa = require("pyarrow", "bulk")
    problems = _problems(shard, text_column, id_column)
    ids, texts, kept = shard.ids, shard.texts, dict(shard.kept)
    skipped_ids: list[Any] = []
    if problems:
        if not skip_invalid:
            offset, problem = problems[0]
            more = f" (and {len(problems) - 1} more bad rows in this shard)" if len(problems) > 1 else ""
            raise CorpusError(
                f"column {text_column!r}, row id {ids[offset].as_py()!r} (row {shard.start + offset}): {problem}{more}; "
                "fix the input or pass --skip-invalid to leave such rows out"
            )
        keep = np.ones(len(shard), dtype=bool)
        keep[[i for i, _ in problems]] = False
        skipped_ids = [ids[i].as_py() for i, _ in problems[:MAX_SKIPPED_IDS]]
        mask = pa.array(keep)
        ids, texts = ids.filter(mask), texts.filter(mask)
        kept = {name: column.filter(mask) for name, column in kept.items()}
    hashes = pa.concat_arrays(
        [content_hashes(texts.slice(i, _HASH_ROWS).to_pylist(), prompt) for i in range(0, len(texts), _HASH_ROWS)]
        or [content_hashes([], prompt)]
    )
    vectors = np.empty((len(ids), dims), np.float32)
    todo = np.ones(len(ids), dtype=bool)
    known = np.zeros(len(ids), dtype=bool)
    if donor is not None:
        positions, found, known = donor.match(ids, hashes)
        if len(positions):
            _check_width(found.shape[1], dims, shard.index, "the previous snapshot")
            vectors[positions] = found
            todo[positions] = False
    rest = np.flatnonzero(todo)
    ordered, rows = _unique_in_length_order(texts.take(pa.array(rest)) if len(rest) < len(texts) else texts)
    slices = range(0, len(ordered), step)

    def run(start: int) -> np.ndarray:
        chunk = ordered.slice(start, step).to_pylist()
        matrix = embed(chunk)
        if progress is not None:
            progress(len(chunk))
        return matrix

    if concurrency > 1 and len(slices) > 1:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="bulk-embed") as pool:
            parts = list(pool.map(run, slices))
    else:
        parts = [run(chunk) for chunk in slices]
    if progress is not None and len(shard) > len(ordered):
        progress(len(shard) - len(ordered))  # copied, duplicate and skipped rows count as done
    unique = np.concatenate(parts) if parts else np.empty((0, dims), np.float32)
    _check_width(unique.shape[1], dims, shard.index, "the generator")
    vectors[rest] = unique[rows]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dims)
    table = pa.table({"id": ids, "embedding": embedding, "content_hash": hashes, **kept})
    reused = len(ids) - len(rest)
    changed = int((known & todo).sum())
    result = ShardResult(
        shard.index, len(ids), len(ordered), len(problems), skipped_ids, reused=reused, changed=changed,
        added=len(rest) - changed,
    )
    return table, result


def _check_width(width: int, dims: int, index: int, source: str) -> None:
    if width != dims:
        raise EmbeddingContractError(f"shard {index}: {source} gave {width}-dimensional vectors, the output holds {dims}")


def write_shard(table: Any, result: ShardResult, directory: Path, name: str) -> None:
    """Write ``table`` as ``directory/name``, visible only once complete.

    It is written under a hidden name (``.name.<pid>.tmp``, which Parquet readers and
    ``*.parquet`` globs skip), flushed to disk, then renamed: a reader, or a job resumed
    after SIGKILL, sees a whole shard or none. A failed write (a full disk) is a
    :class:`BulkOutputError` that says a rerun resumes: the shards written before it stay.
    """
    pq = require("pyarrow.parquet", "bulk")
    pa = require("pyarrow", "bulk")
    meta = {**(table.schema.metadata or {}), META_KEY: json.dumps(result.to_json(), default=str).encode()}
    table = table.replace_schema_metadata(meta)
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    try:
        pq.write_table(table, str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, directory / name)
    except (OSError, pa.ArrowException) as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(directory, name, exc) from None


def write_error(directory: Path, name: str, exc: BaseException) -> BulkOutputError:
    """A failed write into the output, in one line: where, why, and that nothing written is lost."""
    errno = getattr(exc, "errno", None)
    why = os.strerror(errno) if isinstance(errno, int) else str(exc).strip().splitlines()[0]
    if errno is None and "errno 28" in str(exc).lower():  # pyarrow's wording of ENOSPC
        why = os.strerror(28)
    error = BulkOutputError(
        f"{directory}: cannot write {name}: {why}; the shards already written are kept, so running the "
        "same command again resumes the job"
    )
    error.detail = str(exc)
    return error


def read_result(path: Path) -> ShardResult | None:
    """The :class:`ShardResult` stored in a written shard's footer; None when the file does not read
    back whole (truncated or damaged: its footer is gone, or it holds another number of rows)."""
    pq = require("pyarrow.parquet", "bulk")
    pa = require("pyarrow", "bulk")
    try:
        metadata = pq.read_metadata(str(path))
        raw = (metadata.schema.to_arrow_schema().metadata or {}).get(META_KEY)
        if raw is None:
            return ShardResult(int(path.stem.rsplit("-", 1)[-1]), metadata.num_rows)
        data = json.loads(raw)
        result = ShardResult(**{k: v for k, v in data.items() if k in ShardResult.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None
    return result if result.rows == metadata.num_rows else None
