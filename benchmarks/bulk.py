"""Bulk scenarios: the local engine against in-process encode, Ray against local, peak memory.

``python -m benchmarks.bulk rss INPUT OUTPUT`` is the child process of the memory row: it runs
one local bulk job with a cheap hash embedding (the model's own memory does not depend on
the corpus size, the pipeline's would if it did not stream) and prints its peak RSS in MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .data import varied_texts
from .harness import Row, compare_many, timed

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = ROOT / "specs" / "default.json"


def _corpus(directory: Path, texts: list[str], row_group_size: int | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = directory / "corpus.parquet"
    table = pa.table({"id": [f"doc-{i}" for i in range(len(texts))], "text": texts})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def bulk(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """The local engine vs ``manager.encode`` on the same 10 x n texts of varied length (20,000 at --n 2000)."""
    from agent_embeddings import EmbeddingGeneratorManager
    from agent_embeddings.bulk import embed_dataset

    rows = 10 * n
    texts = varied_texts(rows)
    unique_sorted = sorted(dict.fromkeys(texts), key=len)
    manager = EmbeddingGeneratorManager.from_subject_spec(DEFAULT_SPEC)
    manager.get("hf").batch_size = batch
    manager.warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = _corpus(Path(tmp), texts)
        out = Path(tmp) / "vectors"

        def job() -> object:
            return embed_dataset(manager, "hf", corpus, out, overwrite=True, input_type=None, progress=False)

        best, spread = compare_many({
            "bulk": job,
            "encode": lambda: manager.encode("hf", texts),
            "sorted": lambda: manager.encode("hf", unique_sorted),
        }, max(1, min(repeat, 2)))
    shards = -(-rows // 10_000)
    yield Row("8 bulk", f"local engine, {rows:,} varied texts, Parquet in and out ({shards} shards)", "texts/s",
              rows / best["bulk"], "manager.encode, same texts", rows / best["encode"], target=0.95, spread=spread)
    yield Row("8 bulk", "length sorting alone: encode of the unique texts sorted by length", "texts/s",
              rows / best["sorted"], "arrival order", rows / best["encode"], spread=spread,
              note=f"{len(unique_sorted):,} unique of {rows:,}")
    yield Row("8 bulk", "local engine vs encode of its own sorted unique texts (Parquet, checks, manifest)",
              "texts/s", rows / best["bulk"], "sorted encode", rows / best["sorted"], spread=spread)
    manager.close()


def _peak_rss_mb(corpus: Path, out: Path) -> float:
    result = subprocess.run([sys.executable, "-m", "benchmarks.bulk", "rss", str(corpus), str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return float(result.stdout.strip().splitlines()[-1])


def memory(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """Peak RSS of a local job over 10 x n and 100 x n rows (20,000 and 200,000 at --n 2000).

    Parquet is read a row group at a time, so the input has row groups of 10,000 rows (what
    Spark, DuckDB or a chunked writer produce); a file written as one row group of 200,000
    rows (pyarrow's default for small tables) is held whole while it is read.
    """
    small, large = 10 * n, 100 * n
    repeat = max(1, min(repeat, 2))
    runs: dict[int, list[float]] = {small: [], large: []}
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {}
        for rows in runs:
            (Path(tmp) / str(rows)).mkdir()
            corpora[rows] = _corpus(Path(tmp) / str(rows), varied_texts(rows, seed=5), row_group_size=10_000)
        for _ in range(repeat):
            for rows, corpus in corpora.items():
                runs[rows].append(_peak_rss_mb(corpus, corpus.parent / f"out-{len(runs[rows])}"))
    small_mb, large_mb = min(runs[small]), min(runs[large])
    spread = max((max(r) - min(r)) / min(r) for r in runs.values())
    yield Row("8b memory", f"peak RSS of a local bulk job, {large:,} rows (hash embedding, row groups of 10,000)", "MB", large_mb,
              f"{small:,} rows", small_mb, higher_is_better=False, target=0.9, spread=spread,
              note=f"+{large_mb - small_mb:.0f} MB for {large // small}x the rows")


def ray(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """The Ray engine on a local 2-CPU cluster (2 actors) vs the local engine, same 5 x n texts."""
    import ray as ray_module

    from agent_embeddings import EmbeddingGeneratorManager
    from agent_embeddings.bulk import embed_dataset

    rows = 5 * n
    texts = varied_texts(rows, seed=9)
    manager = EmbeddingGeneratorManager.from_subject_spec(DEFAULT_SPEC)
    manager.get("hf").batch_size = batch
    manager.warm_up()
    init_s = timed(lambda: ray_module.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                                           configure_logging=False))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = _corpus(Path(tmp), texts)
            shard_rows = max(1, rows // 4)

            def run(engine: str, source: Path = corpus) -> object:
                return embed_dataset(manager if engine == "local" else DEFAULT_SPEC, "hf-minilm", source,
                                     Path(tmp) / engine, overwrite=True, shard_rows=shard_rows, engine=engine,
                                     workers=2, input_type=None, progress=False)

            (Path(tmp) / "tiny").mkdir()
            tiny = _corpus(Path(tmp) / "tiny", texts[:8])
            fixed_s = timed(lambda: run("ray", tiny))  # actors start and load the model: the per-job cost
            best, spread = compare_many({"ray": lambda: run("ray"), "local": lambda: run("local")},
                                        max(1, min(repeat, 2)))
    finally:
        ray_module.shutdown()
        manager.close()
    yield Row("9 ray", f"Ray engine, 2 actors on a local 2-CPU cluster, {rows:,} texts", "texts/s",
              rows / best["ray"], "local engine", rows / best["local"], spread=spread,
              note=f"ray.init {init_s:.1f} s (not counted); a 1-shard job of 8 texts takes {fixed_s:.1f} s "
                   f"(actors starting, each loading the model, probes); the rest is embedding on 1 CPU per actor")


def _rss_child(corpus: str, out: str) -> None:
    from agent_embeddings import AbstractEmbeddingGenerator, EmbeddingGeneratorManager
    from agent_embeddings.bulk import embed_dataset

    class HashEmbedding(AbstractEmbeddingGenerator):
        provider = "hash"

        def _embed_batch(self, texts: list[str]) -> np.ndarray:
            out = np.empty((len(texts), 384), np.float32)
            for i, text in enumerate(texts):
                out[i] = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(384)
            return out

    manager = EmbeddingGeneratorManager()
    manager.register_generator("hash", HashEmbedding(model="hash-384", normalize=True))
    started = time.perf_counter()
    report = embed_dataset(manager, "hash", corpus, out, input_type=None, progress=False)
    print(json.dumps({"rows": report.rows, "seconds": time.perf_counter() - started}), file=sys.stderr)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec,
    # and the parent here holds a loaded model.
    status = Path("/proc/self/status").read_text()
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(peak_kb / 1024)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "rss":
        _rss_child(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
