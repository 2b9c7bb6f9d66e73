"""Exact top-k over a bulk output, streamed shard by shard, and the comparison of two outputs.

Memory stays bounded at any corpus size: one shard's vectors at a time (10,000 x 384 float32 is
15 MB), the running best ``k`` per query, then the ids and kept columns of the hits alone.

>>> hits = search("vectors/", query_vector, k=5)          # doctest: +SKIP
>>> [(h.id, round(h.score, 3)) for h in hits]            # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._deps import require
from ..errors import BulkOutputError, EmbeddingSpaceError, InvalidInputError
from .manifest import Manifest, read_manifest
from .verify import check_output_space

if TYPE_CHECKING:
    from ..manager import EmbeddingGeneratorManager

__all__ = ["Comparison", "Hit", "compare_outputs", "generator_for", "search", "top_k"]

_RESERVED = ("id", "embedding", "content_hash")


@dataclass(frozen=True)
class Hit:
    """One result: the row's id, its cosine similarity to the query, and the columns kept with it."""

    id: Any
    score: float
    columns: dict[str, Any] = field(default_factory=dict)


def _snapshot(output: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """The output's current snapshot (resolved once: a sync switching it meanwhile changes nothing here)."""
    directory = Path(output).resolve()
    if not directory.is_dir():
        raise BulkOutputError(f"{output}: no bulk output here")
    return directory, sorted(directory.glob("part-*.parquet"))


def top_k(output: str | os.PathLike[str], queries: np.ndarray, k: int = 10) -> list[list[Hit]]:
    """The ``k`` rows of ``output`` most similar (cosine) to each row of ``queries``, best first."""
    pq = require("pyarrow.parquet", "bulk")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    directory, shards = _snapshot(output)
    q = np.asarray(queries, dtype=np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    best_scores = np.full((len(q), 0), -np.inf, np.float32)
    best_where = np.zeros((len(q), 0, 2), np.int64)  # (shard, row)
    unit = _unit_vectors(directory)
    for number, path in enumerate(shards):
        matrix = _matrix(pq.read_table(str(path), columns=["embedding"], memory_map=True).column("embedding"))
        if not len(matrix):
            continue
        if matrix.shape[1] != q.shape[1]:
            raise InvalidInputError(f"the queries have {q.shape[1]} dimensions, {directory} holds {matrix.shape[1]}")
        scores = matrix @ q.T  # rows x queries: the cosine, when the output's vectors have unit length
        if not unit:
            scores /= np.maximum(np.linalg.norm(matrix, axis=1), 1e-12)[:, None]
        take = min(k, len(matrix))
        top = np.argpartition(-scores, take - 1, axis=0)[:take].T  # queries x take
        candidates = np.take_along_axis(scores.T, top, axis=1)
        where = np.stack([np.full_like(top, number), top], axis=2)
        best_scores = np.concatenate([best_scores, candidates], axis=1)
        best_where = np.concatenate([best_where, where], axis=1)
        if best_scores.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
            best_where = np.take_along_axis(best_where, keep[:, :, None], axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    best_where = np.take_along_axis(best_where, order[:, :, None], axis=1)
    return _hits(shards, best_scores, best_where)


def _matrix(column: Any) -> np.ndarray:
    """A ``fixed_size_list<float32>`` column as a matrix: each chunk's values without a copy (a
    shard's row group is one chunk; memory-mapped, the page cache is all it costs)."""
    width = column.type.list_size
    parts = [(c.values if c.offset == 0 and len(c.values) == len(c) * width else c.flatten())
             .to_numpy(zero_copy_only=False).reshape(len(c), width) for c in column.chunks if len(c)]
    if not parts:
        return np.empty((0, width), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _unit_vectors(directory: Path) -> bool:
    try:
        manifest = Manifest.read(directory)
    except BulkOutputError:
        return False
    return manifest is not None and manifest.normalize


def _hits(shards: list[Path], scores: np.ndarray, where: np.ndarray) -> list[list[Hit]]:
    """Read the ids and kept columns of the winning rows only."""
    pq = require("pyarrow.parquet", "bulk")
    rows: dict[int, dict[int, dict[str, Any]]] = {}
    for shard in np.unique(where[:, :, 0]) if where.size else []:
        wanted = sorted({int(r) for r in where[:, :, 1][where[:, :, 0] == shard]})
        path = shards[int(shard)]
        names = [n for n in pq.read_schema(str(path)).names if n not in ("embedding", "content_hash")]
        table = pq.read_table(str(path), columns=names).take(wanted).to_pylist()
        rows[int(shard)] = dict(zip(wanted, table))
    out = []
    for q in range(len(scores)):
        found = []
        for score, (shard, row) in zip(scores[q], where[q]):
            values = dict(rows[int(shard)][int(row)])
            found.append(Hit(values.pop("id"), float(score), values))
        out.append(found)
    return out


def search(output: str | os.PathLike[str], query: np.ndarray, k: int = 10) -> list[Hit]:
    """The ``k`` rows most similar to one query vector, best first."""
    return top_k(output, np.asarray(query, dtype=np.float32)[None, :], k)[0]


def generator_for(manager: EmbeddingGeneratorManager, output: str | os.PathLike[str], prefer: str | None = None) -> str:
    """The name of a generator of ``manager`` that embeds into ``output``'s space (identity and
    probes), trying ``prefer``, then the one that built the output, then every other."""
    manifest, path = read_manifest(output)
    names = manager.names()
    order = [n for n in dict.fromkeys([prefer, manifest.generator, *names]) if n is not None and n in manager]
    reasons = []
    for name in order:
        check = check_output_space(manifest, manager.get(name), str(path))
        if check.ok:
            return manager.resolve(name)
        reasons.append(f"{name}: {check.explain()}")
    raise EmbeddingSpaceError(
        f"no generator of the spec embeds into the space of {path} ({manifest.space_id}): " + "; ".join(reasons)
    )


@dataclass(frozen=True)
class Comparison:
    """How retrieval changes from one output to another over the same corpus, query by query."""

    old: str
    new: str
    old_space: str
    new_space: str
    k: int
    queries: int
    mean_overlap: float  # |top-k old ∩ top-k new| / k, averaged over the queries
    top1_agreement: float  # share of queries whose best hit is the same
    changed_most: list[dict[str, Any]]  # the queries whose results moved most

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        lines = [
            f"{self.queries} queries, top {self.k}: mean overlap {self.mean_overlap:.3f}, "
            f"top-1 agreement {self.top1_agreement:.3f} ({self.old_space} -> {self.new_space})",
        ]
        for row in self.changed_most:
            lines.append(f"  overlap {row['overlap']:.2f}  {row['query']!r}: {row['old'][:3]} -> {row['new'][:3]}")
        return "\n".join(lines)


def compare_outputs(
    manager: EmbeddingGeneratorManager, old: str | os.PathLike[str], new: str | os.PathLike[str],
    queries: list[str], *, k: int = 10, show: int = 5,
) -> Comparison:
    """Embed each query in each output's space (with the generator of ``manager`` that embeds into
    it) and compare the exact top-``k`` of the two: what a team reads before moving an agent."""
    if not queries:
        raise InvalidInputError("no queries to compare with: give at least one")
    results = []
    spaces = []
    for output in (old, new):
        manifest: Manifest = read_manifest(output)[0]
        name = generator_for(manager, output)
        vectors = manager.encode(name, queries, input_type="query")
        results.append(top_k(output, vectors, k))
        spaces.append(manifest.space_id)
    rows = []
    for query, a, b in zip(queries, results[0], results[1]):
        old_ids, new_ids = [h.id for h in a], [h.id for h in b]
        overlap = len(set(old_ids) & set(new_ids)) / max(min(k, len(old_ids) or 1), 1)
        text = {"old_text": _text(a[:1]), "new_text": _text(b[:1])}
        rows.append({"query": query, "overlap": overlap, "top1_same": old_ids[:1] == new_ids[:1],
                     "old": old_ids, "new": new_ids, **{key: v for key, v in text.items() if v is not None}})
    changed = sorted(rows, key=lambda r: (r["overlap"], r["top1_same"]))[:show]
    return Comparison(
        old=str(old), new=str(new), old_space=spaces[0], new_space=spaces[1], k=k, queries=len(queries),
        mean_overlap=float(np.mean([r["overlap"] for r in rows])),
        top1_agreement=float(np.mean([r["top1_same"] for r in rows])), changed_most=changed,
    )


def _text(hits: list[Hit]) -> str | None:
    """A kept text column of the best hit, if the output kept one, to show what it is."""
    if not hits:
        return None
    columns = hits[0].columns
    value = columns.get("text", next(iter(columns.values()), None) if columns else None)
    return None if value is None else str(value)
