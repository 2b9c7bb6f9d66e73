"""What lets a sync skip the model: each row's content hash, and the vectors of a previous snapshot
found by ``(id, content hash)``.

The content hash is BLAKE2b (16 bytes) of the text as the model reads it — the space's prompt
for the job's input type, then the text — stored per row (``content_hash``). A row whose id and
hash are in the previous snapshot keeps its vector, copied bit for bit; any other row is
embedded. The hash alone never decides: the output's space id guards the whole snapshot, so a
model or prompt change can never pass for "nothing changed".
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require

__all__ = ["HASH_BYTES", "Donor", "content_hashes"]

HASH_BYTES = 16
#: donor shards whose vectors stay decoded at once (rows of a new shard mostly come from one or two)
_CACHED_SHARDS = 4


def content_hashes(texts: Sequence[str], prompt: str | None) -> Any:
    """A ``fixed_size_binary(16)`` array: the hash of ``prompt + text`` for each text."""
    pa = require("pyarrow", "bulk")
    head = (prompt or "").encode()
    digests = [hashlib.blake2b(head + t.encode(), digest_size=HASH_BYTES).digest() for t in texts]
    return pa.array(digests, pa.binary(HASH_BYTES))


class Donor:
    """The rows of earlier shards, found by id and content hash.

    ``shards`` are Parquet files holding ``id``, ``content_hash`` and ``embedding``. A version-1
    output's shards have no hashes: ``trusted_hashes`` (an Arrow table of ``id``, ``content_hash``
    computed from the very input those shards were embedded from, as its fingerprint proves)
    stands in for them.
    """

    def __init__(self, shards: Sequence[Path], *, trusted_hashes: Any = None) -> None:
        self.shards = list(shards)
        self._trusted = trusted_hashes
        self._index: Any = None
        self._ids: Any = None
        self._matrices: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # shipped to Ray workers without its caches: each process builds its own index once
        return {**self.__dict__, "_index": None, "_ids": None, "_matrices": OrderedDict()}

    def _build(self) -> Any:
        if self._index is None:
            pa = require("pyarrow", "bulk")
            pq = require("pyarrow.parquet", "bulk")
            parts = []
            for number, path in enumerate(self.shards):
                columns = ["id"] if self._trusted is not None else ["id", "content_hash"]
                table = pq.read_table(str(path), columns=columns)
                rows = table.num_rows
                table = table.append_column("_shard", pa.array(np.full(rows, number, np.int32)))
                parts.append(table.append_column("_row", pa.array(np.arange(rows, dtype=np.int32))))
            index = pa.concat_tables(parts, promote_options="permissive") if parts else None
            if index is not None and self._trusted is not None:
                index = index.join(self._trusted, keys="id", join_type="inner")
            self._index = index
            self._ids = index.column("id").combine_chunks() if index is not None else None
        return self._index

    def match(self, ids: Any, hashes: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For rows (``ids``, ``hashes``): the positions found, their vectors, and which rows' ids the
        donor knows at all (a known id with another hash is a changed row, an unknown one a new row)."""
        pa = require("pyarrow", "bulk")
        pc = require("pyarrow.compute", "bulk")
        index = self._build()
        if index is None or not len(ids):
            return np.empty(0, np.int64), np.empty((0, 0), np.float32), np.zeros(len(ids), bool)
        rows = pa.table({"id": ids, "content_hash": hashes, "_pos": pa.array(np.arange(len(ids), dtype=np.int64))})
        if rows.schema.field("id").type != self._ids.type:  # one output, one id type; never matched across
            return np.empty(0, np.int64), np.empty((0, 0), np.float32), np.zeros(len(ids), bool)
        joined = rows.join(index, keys=["id", "content_hash"], join_type="inner")
        positions = joined.column("_pos").to_numpy()
        shards = joined.column("_shard").to_numpy()
        offsets = joined.column("_row").to_numpy()
        order = np.argsort(positions, kind="stable")
        positions, shards, offsets = positions[order], shards[order], offsets[order]
        vectors = None
        for shard in np.unique(shards):
            take = shards == shard
            matrix = self._matrix(int(shard))
            if vectors is None:
                vectors = np.empty((len(positions), matrix.shape[1]), np.float32)
            vectors[take] = matrix[offsets[take]]
        known = np.asarray(pc.is_in(ids, value_set=self._ids).to_numpy(zero_copy_only=False), dtype=bool)
        return positions, (vectors if vectors is not None else np.empty((0, 0), np.float32)), known

    def known_ids(self) -> Any:
        """Every id the donor holds (to count the rows a sync removes)."""
        self._build()
        pa = require("pyarrow", "bulk")
        return self._ids if self._ids is not None else pa.array([])

    def _matrix(self, shard: int) -> np.ndarray:
        if shard in self._matrices:
            self._matrices.move_to_end(shard)
            return self._matrices[shard]
        pq = require("pyarrow.parquet", "bulk")
        column = pq.read_table(str(self.shards[shard]), columns=["embedding"]).column("embedding").combine_chunks()
        width = column.type.list_size
        matrix: np.ndarray = np.asarray(column.flatten().to_numpy(zero_copy_only=False)).reshape(-1, width)
        self._matrices[shard] = matrix
        while len(self._matrices) > _CACHED_SHARDS:
            self._matrices.popitem(last=False)
        return matrix
