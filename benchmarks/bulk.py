"""Bulk scenarios: the local engine against in-process encode, Ray against local, peak memory.

``python -m benchmarks.bulk rss INPUT OUTPUT`` is the child process of the memory row: it runs
one local bulk job with a cheap hash embedding (the model's own memory does not depend on
the corpus size, the pipeline's would if it did not stream) and prints its peak RSS in MB.
``python -m benchmarks.bulk driver ADDRESS INPUT OUTPUT`` is the driver of the cluster rows: one
``--engine ray`` job against the cluster at ADDRESS; it prints its seconds and peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .cluster import LocalCluster
from .data import varied_texts
from .harness import Row, compare_many, timed
from .specs import DEFAULT_SPEC

ROOT = Path(__file__).resolve().parent.parent


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
              rows / best["bulk"], "manager.encode, same texts", rows / best["encode"], target=0.95, spread=spread,
              extra={"rows": rows})
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
              note=f"+{large_mb - small_mb:.0f} MB for {large // small}x the rows",
              extra={"rows": large, "baseline_rows": small})


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


def cluster(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """``bulk --engine ray`` on a real cluster started with ``ray start`` (benchmarks/cluster.py): one node
    of 1 CPU, then two, on 10 x n short texts (20,000 at --n 2000); then the peak RSS of the driver and
    of each actor on 100 x n rows (200,000) on two nodes. One run each: minutes of CPU."""
    from .data import short_sentences

    small, large = 10 * n, 100 * n
    load_before = os.getloadavg()[0]
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {}
        for rows in (small, large):
            (Path(tmp) / str(rows)).mkdir()
            corpora[rows] = _write(Path(tmp) / str(rows) / "corpus.parquet",
                                   [{"id": f"doc-{i}", "text": t} for i, t in enumerate(short_sentences(rows, 17))])
        with LocalCluster(Path(tmp) / "cluster", num_cpus=1) as ray_cluster:
            runs["1 node"] = _cluster_job(ray_cluster, corpora[small], Path(tmp) / "out-1")
            ray_cluster.add_node()
            runs["2 nodes"] = _cluster_job(ray_cluster, corpora[small], Path(tmp) / "out-2")
            runs["rss"] = _cluster_job(ray_cluster, corpora[large], Path(tmp) / "out-rss")
    one, two, rss = runs["1 node"], runs["2 nodes"], runs["rss"]
    load = (f"1-minute load average {load_before:.1f} before, at most {max(r['load'] for r in runs.values()):.1f} "
            f"during the jobs, {os.getloadavg()[0]:.1f} after")
    yield Row("9b cluster", f"2 nodes x 1 CPU (ray start, loopback), {small:,} short texts, 2 actors", "texts/s",
              small / two["seconds"], "1 node x 1 CPU, 1 actor", small / one["seconds"],
              note=f"both nodes share this machine's {os.cpu_count()} cores with everything else running; "
                   f"wall time includes starting the actors and loading the model in each "
                   f"({one['seconds']:.0f} s vs {two['seconds']:.0f} s); {load}")
    yield Row("9b cluster", f"peak RSS of one actor, {large:,} rows, shards of 10,000, 2 nodes", "MB",
              rss["actor_mb"], f"the same actor, {small:,} rows", two["actor_mb"], higher_is_better=False,
              note=f"driver {rss['driver_mb']:.0f} MB ({small:,} rows: {two['driver_mb']:.0f} MB); actors "
                   f"{', '.join(f'{v:.0f}' for v in rss['actors'])} MB; {large / rss['seconds']:.0f} texts/s; {load}")


def _cluster_job(ray_cluster: LocalCluster, corpus: Path, out: Path) -> dict:
    """One ``--engine ray`` job by a driver process; the actors' peak RSS is read from /proc meanwhile."""
    import threading

    peaks: dict[int, float] = {}
    loads: list[float] = []
    running = True

    def watch() -> None:
        while running:
            for node in ray_cluster.nodes:
                for pid, mb in node.peak_rss_mb("ShardEmbedder").items():
                    peaks[pid] = max(peaks.get(pid, 0.0), mb)
            loads.append(os.getloadavg()[0])
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = subprocess.run([sys.executable, "-m", "benchmarks.bulk", "driver", ray_cluster.address,
                                 str(corpus), str(out)], cwd=ROOT, env=ray_cluster.env,
                                capture_output=True, text=True, timeout=3600)
    finally:
        running = False
        watcher.join()
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    row = json.loads(result.stdout.strip().splitlines()[-1])
    actors = sorted(peaks.values(), reverse=True)
    return {**row, "actors": actors, "actor_mb": max(actors, default=0.0), "load": max(loads, default=0.0)}


def _driver_child(address: str, corpus: str, out: str) -> None:
    from agent_embeddings.bulk import embed_dataset

    started = time.perf_counter()
    report = embed_dataset(DEFAULT_SPEC, "hf-minilm", corpus, out, id_column="id", engine="ray", ray_address=address,
                           input_type=None, progress=False)
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"rows": report.rows, "seconds": seconds, "driver_mb": peak_kb / 1024}))


def _edited(rows: list[dict], seed: int) -> list[dict]:
    """The corpus a day later: 1% of rows changed, 0.5% added, 0.5% removed (issue 20's shape)."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    removed = set(rng.choice(n, n // 200, replace=False).tolist())
    changed = set(rng.choice(n, n // 100, replace=False).tolist()) - removed
    out = [dict(r, text=f"{r['text']} (revised {seed})") if i in changed else r
           for i, r in enumerate(rows) if i not in removed]
    out += [{"id": f"new-{seed}-{i}", "text": f"A new document number {i} of day {seed}."} for i in range(n // 200)]
    return out


def _write(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10_000)
    return path


def sync(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """A sync of 50 x n rows (100,000 at --n 2000) after 1% changed, 0.5% added, 0.5% removed, against
    the full build of the same corpus (model loaded before either; one full build: it takes minutes)."""
    import pyarrow.parquet as pq

    from agent_embeddings import EmbeddingGeneratorManager
    from agent_embeddings.bulk import embed_dataset

    from .data import short_sentences

    total = 50 * n
    base = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(short_sentences(total, seed=21))]
    manager = EmbeddingGeneratorManager.from_subject_spec(DEFAULT_SPEC)
    manager.get("hf").batch_size = batch
    manager.warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        corpus, out = Path(tmp) / "corpus.parquet", Path(tmp) / "vectors"

        def run() -> object:
            return embed_dataset(manager, "hf-minilm", corpus, out, id_column="id", progress=False)

        _write(corpus, base)
        full_s = timed(run)
        syncs, reports = [], []
        for day in range(max(1, min(repeat, 3))):  # each day edits yesterday's corpus: a fresh 2% each time
            before = {r["id"]: r for r in base}
            base = _edited(base, seed=day)
            _write(corpus, base)
            started = time.perf_counter()
            reports.append(run())
            syncs.append(time.perf_counter() - started)
        table = pq.read_table(out)
        vectors = dict(zip(table.column("id").to_pylist(), table.column("embedding").to_numpy(zero_copy_only=False)))
        fresh = [r for r in base if r["id"] not in before or before[r["id"]]["text"] != r["text"]]
        expected = manager.encode("hf-minilm", [r["text"] for r in fresh], input_type="document")
        worst = float(np.abs(np.stack([vectors[r["id"]] for r in fresh]) - expected).max())
    manager.close()
    best = min(syncs)
    last = reports[syncs.index(best)]
    spread = (max(syncs) - best) / best
    yield Row("8c sync", f"sync of {total:,} rows after 1% changed, 0.5% added, 0.5% removed", "s", best,
              "full build of the same corpus", full_s, higher_is_better=False, target=10.0, spread=spread,
              note=f"{last.added} added, {last.changed} changed, {last.unchanged} unchanged, {last.removed} removed, "
                   f"{last.embedded} embedded; changed rows vs a fresh encode: max difference {worst:.1e}; "
                   f"syncs {', '.join(f'{s:.1f}' for s in syncs)} s")


def search(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """Exact top-10 over 50 x n rows (100,000 at --n 2000), streamed shard by shard, in a child process
    (ms per query, peak RSS), against loading the whole table and one matrix product."""
    from agent_embeddings import AbstractEmbeddingGenerator, EmbeddingGeneratorManager
    from agent_embeddings.bulk import embed_dataset

    class HashEmbedding(AbstractEmbeddingGenerator):  # the vectors' values do not matter to the search's cost
        provider = "hash"

        def _embed_batch(self, texts: list[str]) -> np.ndarray:
            out = np.empty((len(texts), 384), np.float32)
            for i, text in enumerate(texts):
                out[i] = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(384)
            return out

    total = 50 * n
    manager = EmbeddingGeneratorManager()
    manager.register_generator("hash", HashEmbedding(model="hash-384", normalize=True))
    with tempfile.TemporaryDirectory() as tmp:
        from .data import short_sentences

        corpus = _write(Path(tmp) / "corpus.parquet",
                        [{"id": f"doc-{i}", "text": t} for i, t in enumerate(short_sentences(total, seed=3))])
        out = Path(tmp) / "vectors"
        embed_dataset(manager, "hash", corpus, out, id_column="id", input_type=None, progress=False)
        runs = {"stream": [], "whole": []}
        for i in range(max(repeat, 2)):
            for way in (("stream", "whole") if i % 2 == 0 else ("whole", "stream")):
                result = subprocess.run([sys.executable, "-m", "benchmarks.bulk", "search", way, str(out)], cwd=ROOT,
                                        capture_output=True, text=True, timeout=600)
                if result.returncode:
                    raise RuntimeError(result.stderr[-2000:])
                runs[way].append(json.loads(result.stdout.strip().splitlines()[-1]))
    stream = min(runs["stream"], key=lambda r: r["ms"])
    whole = min(runs["whole"], key=lambda r: r["ms"])
    rss_stream, rss_whole = min(r["rss_mb"] for r in runs["stream"]), min(r["rss_mb"] for r in runs["whole"])
    times = [r["ms"] for r in runs["stream"] + runs["whole"]]
    yield Row("8d search", f"exact top-10, {total:,} rows, streamed shard by shard", "ms/query", stream["ms"],
              "the whole matrix held in memory (loaded once)", whole["ms"], higher_is_better=False,
              spread=(max(times) - min(times)) / min(times),
              note=f"peak RSS {rss_stream:.0f} MB streamed vs {rss_whole:.0f} MB whole; the same top-10: "
                   f"{stream['top'] == whole['top']}")


def _search_child(way: str, output: str) -> None:
    import pyarrow.parquet as pq

    from agent_embeddings.bulk.search import search as search_output

    queries = np.random.default_rng(7).standard_normal((5, 384)).astype(np.float32)
    times, top = [], []
    if way == "whole":  # a service that holds the whole matrix: loaded once, then one product per query
        table = pq.read_table(output, columns=["id", "embedding"])
        column = table.column("embedding").combine_chunks()
        matrix = column.values.to_numpy().reshape(len(column), -1)
        norms = np.linalg.norm(matrix, axis=1)
        ids = table.column("id").to_pylist()
    for query in queries:  # the best of five queries: the first one also warms the page cache
        started = time.perf_counter()
        if way == "stream":
            top = [h.id for h in search_output(output, query, k=10)]
        else:
            scores = matrix @ (query / np.linalg.norm(query)) / norms
            top = [ids[i] for i in np.argsort(-scores)[:10]]
        times.append(time.perf_counter() - started)
    ms = min(times) * 1e3
    status = Path("/proc/self/status").read_text()
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"ms": ms, "rss_mb": peak_kb / 1024, "top": top}))


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
    elif len(sys.argv) == 5 and sys.argv[1] == "driver":
        _driver_child(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "search":
        _search_child(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
