"""``bulk --engine ray`` on a local Ray cluster: the same shards as the local engine, and retried failures.

The cluster is started once per test session (``ray_cluster`` in conftest: ``ray.init(num_cpus=2)``).
The fault is injected in front of a real server: an OpenAI-compatible endpoint that answers
503 to the first request, so that one Ray worker's first shard fails after the spec's own
(single) attempt and Ray Data runs it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from agent_embeddings.bulk import MANIFEST, embed_dataset
from agent_embeddings.errors import CorpusError
from agent_embeddings.server.http import serve_in_thread
from benchmarks.data import short_sentences

from ._faulty_front import faulty_front

TOL = 1e-5
N = 600


def read(out: Path) -> tuple[list, np.ndarray]:
    table = pq.read_table(out)
    return table.column("id").to_pylist(), np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ray-corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(short_sentences(N, 3))))
    return path


def test_ray_engine_writes_the_local_engine_s_shards(ray_cluster, hf_manager, default_spec, corpus, tmp_path):
    local = embed_dataset(hf_manager, "hf-minilm", corpus, tmp_path / "local", id_column="id", shard_rows=200)
    distributed = embed_dataset(default_spec, "hf-minilm", corpus, tmp_path / "ray", id_column="id", shard_rows=200,
                                engine="ray", workers=2)
    assert (distributed.rows, distributed.shards, distributed.engine) == (N, 3, "ray")
    ids, vectors = read(tmp_path / "ray")
    local_ids, local_vectors = read(tmp_path / "local")
    assert ids == local_ids == [f"r{i}" for i in range(N)]
    assert np.abs(vectors - local_vectors).max() <= TOL
    assert sorted(p.name for p in (tmp_path / "ray").glob("*.parquet")) == sorted(
        p.name for p in (tmp_path / "local").glob("*.parquet"))
    assert json.loads((tmp_path / "ray" / MANIFEST).read_text())["identity"] == json.loads(
        (tmp_path / "local" / MANIFEST).read_text())["identity"]
    assert local.rows == N


def test_a_worker_whose_first_shard_fails_is_retried_and_the_output_is_complete(
    ray_cluster, hf_manager, corpus, tmp_path
):
    with serve_in_thread(hf_manager) as upstream, faulty_front(f"http://{upstream.address}", [(503, {})]) as (
        front, base_url
    ):
        spec = {"subject_id": "ray", "models": [{
            "llm_type": "embeddings", "llm_block_id": "openai:hf-minilm",
            "llm_parameters": {"base_url": base_url, "api_key_required": False, "retry": {"attempts": 1}},
        }]}
        report = embed_dataset(spec, "openai", corpus, tmp_path / "out", id_column="id", shard_rows=200,
                               engine="ray", workers=2)
    assert front.injected == [503]  # the outage happened, inside a Ray worker, past the spec's single attempt
    assert (report.rows, report.shards) == (N, 3)
    ids, vectors = read(tmp_path / "out")
    assert ids == [f"r{i}" for i in range(N)]
    assert np.abs(vectors - hf_manager.encode("hf-minilm", short_sentences(N, 3), input_type="document")).max() <= TOL


def test_bad_rows_on_a_worker_are_one_clear_error_and_nothing_is_retried(ray_cluster, default_spec, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": "x1", "text": "fine"}\n{"id": "x2", "text": null}\n')
    with pytest.raises(CorpusError, match=r"^column 'text', row id 'x2' \(row 1\): text is null"):
        embed_dataset(default_spec, "hf-minilm", source, tmp_path / "out", id_column="id", engine="ray", workers=1)
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_a_job_leaves_ray_s_global_data_context_as_it_was(ray_cluster, default_spec, corpus, tmp_path):
    from ray.data import DataContext

    context = DataContext.get_current()
    before = (context.enable_progress_bars, context.retried_map_errors, context.max_map_retries,
              context.actor_task_retry_on_errors, context.raise_original_map_exception)
    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": "x1", "text": ""}\n')
    with pytest.raises(CorpusError) as caught:  # a job that fails, too, restores nothing because it changed nothing
        embed_dataset(default_spec, "hf-minilm", source, tmp_path / "out", id_column="id", engine="ray", workers=1)
    assert type(caught.value) is CorpusError and "Ray" not in str(caught.value) and "\n" not in str(caught.value)
    assert DataContext.get_current() is context
    assert (context.enable_progress_bars, context.retried_map_errors, context.max_map_retries,
            context.actor_task_retry_on_errors, context.raise_original_map_exception) == before


def test_workers_read_an_input_in_a_pyarrow_filesystem_they_are_handed(ray_cluster, hf_manager, default_spec,
                                                                         tmp_path):
    """The filesystem object travels to the actors with the job (as an s3:// one would) and each
    actor reads its own shard through it."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    texts = short_sentences(200, 8)
    (tmp_path / "bucket").mkdir()
    pq.write_table(pa.table({"id": list(range(200)), "text": texts}), tmp_path / "bucket" / "corpus.parquet",
                   row_group_size=100)
    store = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    report = embed_dataset(default_spec, "hf-minilm", "corpus.parquet", tmp_path / "out", id_column="id",
                           shard_rows=100, engine="ray", workers=2, input_filesystem=store)
    assert (report.rows, report.shards, report.engine) == (200, 2, "ray")
    ids, vectors = read(tmp_path / "out")
    assert ids == list(range(200))
    assert np.abs(vectors - hf_manager.encode("hf-minilm", texts, input_type="document")).max() <= TOL
