"""``agent-embeddings bulk --engine ray`` against a real two-node Ray cluster that loses a node.

One cluster for the module (``benchmarks/cluster.py``): a head and a worker node, each a
``ray start --block`` process with its own raylet, object store and workers, on loopback
addresses of their own (127.0.0.2 and 127.0.0.3, distinct ports; no network namespaces: the
loopback range gives each node its own address at no cost), 1 CPU each, token authentication
on. The driver is the real CLI in a process of its own, run from another working directory
with relative paths (what a user types), joining with ``--ray-address``. Every process the
module starts is killed by process group when it ends, failed or not.

What is checked: the output equals the local engine's (shard names, ids, vectors within
1e-6); SIGKILL of the worker node's whole session mid-job, then the job's end or its one-line
failure and a rerun; SIGKILL of the driver mid-job, then a rerun that resumes the unfinished
snapshot while readers keep seeing the previous one. Timelines are printed (``-s`` shows them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.data import short_sentences

pytestmark = pytest.mark.slow

N = 1200  # 12 shards of 100 rows: enough for a kill to land mid-job, small enough for a 2-core CI box
SHARD_ROWS = 100
#: a job here takes ~10-40 s (two actors loading MiniLM, then 1,200 short texts on 1 CPU each); the
#: limit only stops a hung job from hanging the suite
JOB_TIMEOUT_S = 400


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray")
    from benchmarks.cluster import LocalCluster

    with LocalCluster(tmp_path_factory.mktemp("cluster"), num_cpus=1) as cluster:
        cluster.add_node()
        yield cluster
    assert not cluster.leaked, f"processes of the cluster outlived it: {cluster.leaked}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A Parquet corpus in row groups of 100 rows (each actor reads only its shard's row group)."""
    path = tmp_path_factory.mktemp("cluster-corpus") / "corpus.parquet"
    texts = short_sentences(N, 11)
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(N)], "text": texts}), path, row_group_size=SHARD_ROWS)
    return path


@pytest.fixture(scope="module")
def local_output(hf_manager, corpus, tmp_path_factory) -> Path:
    from agent_embeddings.bulk import embed_dataset

    out = tmp_path_factory.mktemp("cluster-local") / "vectors"
    embed_dataset(hf_manager, "hf-minilm", corpus, out, id_column="id", shard_rows=SHARD_ROWS, progress=False)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The working directory of the first test's job, whose output the driver-kill test overwrites."""
    return tmp_path_factory.mktemp("cluster-built")


def bulk(cluster, workdir: Path, corpus: Path, *extra: str) -> subprocess.Popen[str]:
    """The CLI as a user runs it, from ``workdir``, with the input and output given relative to it."""
    command = [sys.executable, "-m", "agent_embeddings", "bulk", "--engine", "ray", "--ray-address", cluster.address,
               "--workers", "2", "--spec", str(Path(__file__).parent.parent / "specs" / "default.json"),
               "--name", "hf-minilm", "--input", os.path.relpath(corpus, workdir), "--output", "vectors",
               "--id-column", "id", "--shard-rows", str(SHARD_ROWS), "--no-progress", "--json", *extra]
    return subprocess.Popen(command, cwd=workdir, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the bulk job hung for {JOB_TIMEOUT_S} s: {err[-3000:]}")
    return process.returncode, out, err


def pending_shards(output: Path) -> list[Path]:
    """Shards written so far into the snapshot being built (not yet visible at ``output``)."""
    store = output.parent / f".{output.name}.bulk"
    current = output.resolve() if output.is_symlink() else None
    return [p for p in store.glob("snap-*/part-*.parquet") if current is None or p.parent != current]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def check_rows_once(output: Path, local_output: Path) -> None:
    """Every input row exactly once, in the local engine's shards, with its vectors."""
    table, local = pq.read_table(output), pq.read_table(local_output)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == N
    assert ids == local.column("id").to_pylist() == [f"d{i}" for i in range(N)]
    # the same shards (part-<input key>-<index>; the key hashes the input path as given: relative here)
    assert sorted(p.name.rsplit("-", 1)[1] for p in output.glob("*.parquet")) == sorted(
        p.name.rsplit("-", 1)[1] for p in local_output.glob("*.parquet"))
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    expected = np.stack(local.column("embedding").to_numpy(zero_copy_only=False))
    assert np.abs(vectors - expected).max() <= 1e-6


def actors_on(node) -> list[int]:
    return list(node.peak_rss_mb("ShardEmbedder"))


def test_a_two_node_job_writes_the_local_engine_s_output(cluster, corpus, local_output, built):
    process = bulk(cluster, built, corpus)
    seen: set[str] = set()
    while process.poll() is None:  # which nodes ran an actor (ray::...ShardEmbedder) during the job
        seen.update(node.name for node in cluster.nodes if actors_on(node))
        time.sleep(0.2)
    code, out, err = finish(process)
    assert code == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["rows"], report["shards"], report["engine"], report["action"]) == (N, N // SHARD_ROWS, "ray", "build")
    assert seen == {"head", "node1"}, f"actors ran on {seen}"
    check_rows_once(built / "vectors", local_output)


def test_losing_the_worker_node_mid_job_finishes_every_row_once(cluster, corpus, local_output, tmp_path):
    """SIGKILL the worker node's raylet and workers once a shard is written: Ray restarts its actor
    on the node left, or the job fails in one line and a rerun completes it."""
    output = tmp_path / "vectors"
    node = cluster.nodes[-1]
    started = time.monotonic()
    process = bulk(cluster, tmp_path, corpus)
    wait_for(lambda: actors_on(node) and pending_shards(output) or process.poll() is not None, JOB_TIMEOUT_S,
             "an actor on the worker node and a first shard")
    assert process.poll() is None, "the job ended before the node could be killed: make the corpus larger"
    written = len(pending_shards(output))
    processes = node.pids()  # its raylet, its workers (the actor among them), its agents
    assert set(actors_on(node)) <= set(processes)
    cluster.kill(node)
    killed = time.monotonic() - started
    wait_for(lambda: not [pid for pid in processes if Path(f"/proc/{pid}").exists()
                          and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"],
             10, "every process of the killed node to be gone")
    assert not output.exists()  # a first build shows nothing until it is whole
    code, out, err = finish(process)
    ended = time.monotonic() - started
    timeline = {"killed_at_s": round(killed, 1), "shards_written_at_kill": written, "job_ended_at_s": round(ended, 1),
                "exit": code}
    if code != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        timeline["error"] = lines[-1]
        assert not output.exists()  # a first build that failed leaves nothing visible...
        assert pending_shards(output)  # ...and keeps what it wrote, for the rerun
        rerun = bulk(cluster, tmp_path, corpus)
        code, out, err = finish(rerun)
        timeline["rerun_ended_at_s"] = round(time.monotonic() - started, 1)
    print(f"\nnode kill timeline: {json.dumps(timeline)}")
    assert code == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["rows"] == N
    check_rows_once(output, local_output)
    cluster.add_node()  # the next test has two nodes again


def test_killing_the_driver_mid_job_leaves_the_previous_snapshot_and_a_rerun_resumes(
    cluster, corpus, local_output, built
):
    output, tmp_path = built / "vectors", built
    if not output.is_symlink():  # run alone: the first test's output is the snapshot readers see
        code, _, err = finish(bulk(cluster, built, corpus))
        assert code == 0, err[-3000:]
    before = output.resolve()
    started = time.monotonic()
    process = bulk(cluster, tmp_path, corpus, "--overwrite")  # a new snapshot of every shard
    wait_for(lambda: pending_shards(output) or process.poll() is not None, JOB_TIMEOUT_S, "a first shard")
    assert process.poll() is None, "the job ended before the driver could be killed: make the corpus larger"
    os.killpg(process.pid, signal.SIGKILL)  # the CLI and anything it started in its session
    process.wait()
    killed = time.monotonic() - started
    written = len(pending_shards(output))
    assert output.resolve() == before  # readers still see the previous snapshot, whole
    check_rows_once(output, local_output)
    rerun = bulk(cluster, tmp_path, corpus, "--overwrite")
    code, out, err = finish(rerun)
    print(f"\ndriver kill timeline: {json.dumps({'killed_at_s': round(killed, 1), 'shards_written_at_kill': written, 'rerun_ended_at_s': round(time.monotonic() - started, 1)})}")
    assert code == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["resumed_shards"] >= 1 and report["rows"] == N
    assert output.resolve() != before
    check_rows_once(output, local_output)
