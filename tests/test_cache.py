"""The disk cache's own checks: a real SQLite file, damaged on disk, never serves a wrong vector.

The generators share the session's all-MiniLM-L6-v2 (``hf_manager``); only the cache file is new.
"""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path

import numpy as np

from agent_embeddings import HuggingFaceEmbeddingGenerator
from agent_embeddings.cache import DiskCache

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["A cheetah is running behind its prey.", "The cat sits outside.", "gRPC carries packed float32 bytes."]


def disk_generator(path: Path) -> HuggingFaceEmbeddingGenerator:
    # backend auto, as hf_manager's spec says: the same loaded model (torch would be a second one, ~15 s of CPU)
    return HuggingFaceEmbeddingGenerator(model_name=MINILM, backend="auto", device="cpu", normalize=True,
                                         cache={"kind": "disk", "path": str(path)})


def flip(path: Path, vector: np.ndarray, component: int, mask: int) -> None:
    """Flip bits of one float32 of ``vector`` where its bytes lie in the SQLite file itself."""
    blob = path.read_bytes()
    needle = vector.astype("<f4").tobytes()
    assert blob.count(needle) == 1, "the vector is stored once, in the main file (the WAL was checkpointed)"
    at = blob.index(needle) + component * 4 + 3  # little-endian: byte 3 holds the sign and 7 exponent bits
    path.write_bytes(blob[:at] + bytes([blob[at] ^ mask]) + blob[at + 1 :])


def test_finding_21_bits_flipped_in_the_file_are_misses_rewritten_and_counted(hf_manager, tmp_path: Path):
    path = tmp_path / "vectors.sqlite3"
    writer = disk_generator(path)
    expected = writer.encode(TEXTS)
    writer.close()  # the last connection: SQLite checkpoints the WAL into the main file and removes it
    assert not Path(f"{path}-wal").exists()
    flip(path, expected[0], 0, 0x80)  # the sign of component 0: a plausible, wrong vector
    flip(path, expected[1], 5, 0x40)  # the top exponent bit of component 5: about 1e37, norm inf
    reader = disk_generator(path)
    got = reader.encode(TEXTS)
    assert np.abs(got - expected).max() <= 1e-6  # the damaged rows were recomputed, the third served
    assert np.allclose(np.linalg.norm(got.astype(np.float64), axis=1), 1.0, atol=1e-5)
    stats = reader.cache.stats()
    assert (stats["hits"], stats["misses"], stats["corrupt"]) == (1, 2, 2)
    # rewritten: all three are hits now, from this process and from another one
    assert reader.embed(TEXTS).cache_hits == 3 and reader.cache.stats()["corrupt"] == 2
    reader.close()
    other = disk_generator(path)
    assert other.embed(TEXTS).cache_hits == 3 and other.cache.stats()["corrupt"] == 0
    other.close()


def test_finding_21_rows_that_are_not_finite_of_the_wrong_width_or_without_checksum_are_misses(tmp_path: Path):
    path = tmp_path / "c.sqlite3"
    cache = DiskCache(path)
    good = np.linspace(-1, 1, 8, dtype=np.float32)
    cache.put_many([("nan", good), ("short", good), ("old", good), ("ok", good)])
    with sqlite3.connect(path) as db:  # damage that keeps a valid checksum: only the other checks see it
        nan = np.array([np.nan, *good[1:]], dtype="<f4").tobytes()
        db.execute("UPDATE vectors SET data = ?, crc = ? WHERE key = 'nan'", (nan, zlib.crc32(nan, zlib.crc32(b"nan"))))
        db.execute("UPDATE vectors SET dims = 7 WHERE key = 'short'")
        db.execute("UPDATE vectors SET crc = NULL WHERE key = 'old'")  # as written before checksums existed
    found = cache.get_many(["nan", "short", "old", "ok"])
    assert [v is not None for v in found] == [False, False, False, True]
    assert np.array_equal(found[3], good)
    assert (cache.stats()["corrupt"], cache.stats()["misses"]) == (2, 3)  # the unchecked row is a plain miss
    cache.close()


def test_finding_21_a_file_from_before_checksums_keeps_working(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the schema and a row as the previous release wrote them
        db.execute("CREATE TABLE vectors (key TEXT PRIMARY KEY, dims INTEGER NOT NULL, data BLOB NOT NULL,"
                   " used INTEGER NOT NULL DEFAULT 0)")
        db.execute("INSERT INTO vectors VALUES ('k', 2, ?, 1)", (np.array([1, 2], dtype="<f4").tobytes(),))
    cache = DiskCache(path)
    assert [v is None for v in cache.get_many(["k"])] == [True]  # unverified: a miss, recomputed
    assert cache.stats()["corrupt"] == 0
    cache.put_many([("k", np.array([1, 2], dtype=np.float32))])
    assert cache.get_many(["k"])[0].tolist() == [1.0, 2.0] and cache.size() == 1
    cache.close()
