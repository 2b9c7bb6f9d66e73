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
from .source import Shard

__all__ = ["ShardResult", "embed_shard", "shard_name", "write_shard"]

# How many skipped ids a shard remembers (its footer stays small; the count is always exact).
MAX_SKIPPED_IDS = 1000
META_KEY = b"agent_embeddings"


def shard_name(fingerprint: str, index: int) -> str:
    """``part-<input>-<index>.parquet``: the input's fingerprint keeps appended inputs apart."""
    return f"part-{fingerprint[:8]}-{index:06d}.parquet"


@dataclass
class ShardResult:
    """What a written shard holds: rows written, unique texts embedded, rows skipped (and which)."""

    index: int
    rows: int
    unique: int = 0
    skipped: int = 0
    skipped_ids: list[Any] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "rows": self.rows, "unique": self.unique, "skipped": self.skipped,
                "skipped_ids": self.skipped_ids}


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
) -> tuple[Any, ShardResult]:
    """Embed one shard; returns the Arrow table to write (``id``, ``embedding``) and its result.

    ``embed`` maps a list of texts to a float32 matrix (the generator, through the manager).
    Bad rows fail the shard (naming column, id and problem) unless ``skip_invalid``.
    """
    pa = require("pyarrow", "bulk")
    problems = _problems(shard, text_column, id_column)
    ids, texts = shard.ids, shard.texts
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
    ordered, rows = _unique_in_length_order(texts)
    slices = range(0, len(ordered), step)

    def run(start: int) -> np.ndarray:
        chunk = ordered.slice(start, step).to_pylist()
        vectors = embed(chunk)
        if progress is not None:
            progress(len(chunk))
        return vectors

    if concurrency > 1 and len(slices) > 1:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="bulk-embed") as pool:
            parts = list(pool.map(run, slices))
    else:
        parts = [run(chunk) for chunk in slices]
    if progress is not None and len(shard) > len(ordered):
        progress(len(shard) - len(ordered))  # duplicates and skipped rows count as done
    unique = np.concatenate(parts) if parts else np.empty((0, dims), np.float32)
    if unique.shape[1] != dims:
        raise EmbeddingContractError(f"shard {shard.index}: the generator returned {unique.shape[1]} dims, the job's probes {dims}")
    vectors = np.ascontiguousarray(unique[rows], dtype=np.float32)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dims)
    table = pa.table({"id": ids, "embedding": embedding})
    result = ShardResult(shard.index, len(ids), len(ordered), len(problems), skipped_ids)
    return table, result


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
        result = ShardResult(data["index"], data["rows"], data["unique"], data["skipped"], data["skipped_ids"])
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None
    return result if result.rows == metadata.num_rows else None
