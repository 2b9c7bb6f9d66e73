"""``agent-embeddings bulk`` with the local engine: real model, real files, a real SIGKILL.

Vectors are compared with the same generator's in-process ``encode``; outputs are read back
with plain pyarrow (and pandas), as a user's index loader would.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from agent_embeddings import EmbeddingGeneratorManager
from agent_embeddings.bulk import MANIFEST, embed_dataset
from agent_embeddings.bulk.source import Corpus
from agent_embeddings.bulk.store import Store
from agent_embeddings.cli import main
from agent_embeddings.errors import (
    BulkOutputError,
    CorpusError,
    EmbeddingSpaceError,
    InvalidInputError,
    RemoteNotFoundError,
)
from agent_embeddings.server.http import serve_in_thread
from agent_embeddings.space import PROBES
from benchmarks.data import short_sentences

from ._faulty_front import faulty_front

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-5
N = 1000  # 4 shards of 250 across row groups of 300, and 10 of 100 for the SIGKILL test
SHARD_ROWS = 250


def read_vectors(out: Path) -> tuple[list, np.ndarray]:
    table = pq.read_table(out)  # the directory, as any Parquet reader takes it
    return table.column("id").to_pylist(), np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return short_sentences(N, seed=7)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, texts) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.parquet"
    table = pa.table({"id": [f"doc-{i}" for i in range(N)], "text": texts, "extra": list(range(N))})
    pq.write_table(table, path, row_group_size=300)
    return path


@pytest.fixture(scope="module")
def reference(hf_manager, texts) -> np.ndarray:
    return hf_manager.encode("hf-minilm", texts, input_type="document")


@pytest.fixture(scope="module")
def built(hf_manager, corpus, tmp_path_factory):
    """One uninterrupted local run over the whole corpus (4 shards)."""
    out = tmp_path_factory.mktemp("vectors")
    report = embed_dataset(hf_manager, "hf-minilm", corpus, out, id_column="id", shard_rows=SHARD_ROWS)
    return out, report


# -- the output ------------------------------------------------------------------------------
def test_vectors_equal_in_process_encode_with_ids_in_input_order(built, reference):
    out, report = built
    ids, vectors = read_vectors(out)
    assert ids == [f"doc-{i}" for i in range(N)]
    assert np.abs(vectors - reference).max() <= TOL
    assert (report.rows, report.embedded, report.shards, report.resumed_shards) == (N, N, 4, 0)
    names = sorted(p.name for p in out.glob("*.parquet"))
    prefix = names[0][: len("part-12345678-")]
    assert names == [f"{prefix}00000{i}.parquet" for i in range(4)]


def test_output_is_plain_parquet_with_a_fixed_size_list_of_float32(built):
    out, _ = built
    schema = pq.read_schema(next(out.glob("part-*.parquet")))
    assert schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert schema.field("id").type == pa.string()
    import pandas as pd

    frame = pd.read_parquet(out)  # the manifest's leading "_" keeps it out of the way
    assert list(frame.columns) == ["id", "embedding", "content_hash"] and len(frame) == N


def test_manifest_records_the_space_the_probes_and_the_input(built, corpus):
    out, _ = built
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["generator"] == "hf-minilm" and manifest["dims"] == 384 and manifest["normalize"] is True
    assert manifest["identity"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["identity"]["precision"] == "fp32" and manifest["input_type"] == "document"
    assert manifest["identity"]["max_seq_length"] == 256 and manifest["space_id"].startswith("all-minilm-l6-v2-")
    assert manifest["model_item"]["llm_block_id"] == "hf:sentence-transformers/all-MiniLM-L6-v2"
    assert set(manifest["probes"]["vectors"]) == {"none", "query", "document"}
    assert all(len(v) == len(manifest["probes"]["texts"]) >= 3 for v in manifest["probes"]["vectors"].values())
    [record] = manifest["inputs"]
    assert record["source"] == str(corpus) and record["complete"] and record["rows"] == N and record["shards"] == 4
    assert manifest["rows"] == N


def test_run_again_on_an_unchanged_input_does_nothing(hf_manager, built, corpus):
    out, _ = built
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    report = embed_dataset(hf_manager, "hf-minilm", corpus, out, id_column="id", shard_rows=SHARD_ROWS)
    assert (report.action, report.rows, report.embedded, report.unchanged) == ("unchanged", N, 0, N)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before


def test_verify_space_passes_for_the_same_generator_and_fails_for_another(hf_manager, built, default_spec):
    out, _ = built
    check = hf_manager.verify_space("hf", out / MANIFEST)
    assert check.ok and check.min_cosine > 0.9999
    spec = json.loads(default_spec.read_text())
    spec["models"][0]["llm_parameters"]["normalize"] = False
    with EmbeddingGeneratorManager.from_subject_spec(spec) as other:
        with pytest.raises(EmbeddingSpaceError, match="normalization changed from True to False"):
            other.verify_space("hf-minilm", out)
    with pytest.raises(BulkOutputError, match="no bulk manifest"):
        hf_manager.verify_space("hf", out.parent)


def test_probes_catch_a_model_swapped_behind_the_same_identity(hf_manager, built, tmp_path):
    """Identity alone cannot see a new model behind an unchanged endpoint name; the probes do."""
    out, _ = built
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    manifest = json.loads((out / MANIFEST).read_text())
    rng = np.random.default_rng(0)
    for kind, vectors in manifest["probes"]["vectors"].items():
        manifest["probes"]["vectors"][kind] = rng.normal(size=np.shape(vectors)).tolist()
    (swapped / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(EmbeddingSpaceError, match="probe sentences moved"):
        hf_manager.verify_space("hf", swapped)
    with pytest.raises(EmbeddingSpaceError, match="probe sentences moved"):  # and no job appends to it
        embed_dataset(hf_manager, "hf", ROOT / "examples" / "corpus.jsonl", swapped)
    assert not list(swapped.glob("*.parquet"))


def test_another_generator_is_refused_before_writing(built, default_spec, corpus):
    out, _ = built
    spec = json.loads(default_spec.read_text())
    spec["models"][0]["llm_parameters"]["prompt"] = "passage: "
    shards = sorted(out.glob("*.parquet"))
    with pytest.raises(EmbeddingSpaceError, match=r"the prompt of plain texts changed from None to 'passage: '.*another --output.*or pass --overwrite"):
        embed_dataset(spec, "hf-minilm", corpus, out, id_column="id", shard_rows=SHARD_ROWS)
    assert sorted(out.glob("*.parquet")) == shards


# -- inputs ----------------------------------------------------------------------------------
def test_jsonl_and_csv_inputs_give_the_vectors_of_the_same_texts(hf_manager, tmp_path, texts, reference):
    rows = [{"id": 1000 + i, "text": t} for i, t in enumerate(texts[:150])]
    jsonl = write_jsonl(tmp_path / "corpus.jsonl", rows)
    csv = tmp_path / "corpus.csv"
    pacsv.write_csv(pa.table({"text": texts[:150]}), csv)
    embed_dataset(hf_manager, "hf", jsonl, tmp_path / "from-jsonl", id_column="id", shard_rows=64)
    embed_dataset(hf_manager, "hf", csv, tmp_path / "from-csv", shard_rows=64)  # no id column: row numbers
    ids, vectors = read_vectors(tmp_path / "from-jsonl")
    assert ids == list(range(1000, 1150)) and np.abs(vectors - reference[:150]).max() <= TOL
    ids, vectors = read_vectors(tmp_path / "from-csv")
    assert ids == list(range(150)) and np.abs(vectors - reference[:150]).max() <= TOL


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_a_shard_read_alone_equals_the_streamed_shard(tmp_path, fmt):
    """What a Ray worker reads for shard k is what the local stream yields as shard k, across files."""
    directory = tmp_path / "in"
    directory.mkdir()
    start = 0
    for number, size in enumerate([7, 30, 1, 45]):
        table = pa.table({"id": list(range(start, start + size)), "text": [f"row {i}" for i in range(start, start + size)]})
        path = directory / f"f{number}.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path, row_group_size=4)
        elif fmt == "csv":
            pacsv.write_csv(table, path)
        else:
            write_jsonl(path, table.to_pylist())
        start += size
    (directory / "_ignored.parquet").write_bytes(b"not parquet")  # hidden by its name, like Spark's _SUCCESS
    corpus = Corpus.open(directory, text_column="text", id_column="id")
    streamed = list(corpus.shards(10))
    assert [len(s) for s in streamed] == [10] * 8 + [3]
    assert [i for s in streamed for i in s.ids.to_pylist()] == list(range(83))
    for shard in streamed:
        alone = Corpus.open(directory, text_column="text", id_column="id").read_shard(shard.index, 10)
        assert alone.ids.to_pylist() == shard.ids.to_pylist() and alone.texts.to_pylist() == shard.texts.to_pylist()


def test_a_directory_of_several_formats_is_refused(tmp_path):
    (tmp_path / "a.csv").write_text("text\nhello\n")
    write_jsonl(tmp_path / "b.jsonl", [{"text": "hi"}])
    with pytest.raises(CorpusError, match="mixes formats"):
        Corpus.open(tmp_path, text_column="text")


# -- bad inputs: a clear error, and no partial shard left visible -----------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: d / "missing.parquet", "no such file or directory"),
        (lambda d: write_jsonl(d / "c.jsonl", [{"body": "x"}]), "no text column 'text'; its columns: body"),
        (lambda d: (d / "c.parquet").write_bytes(b"PAR1 this is not parquet") and d / "c.parquet", "cannot read as parquet"),
        (lambda d: (d / "c.txt").write_text("x") and d / "c.txt", "unknown input format '.txt'"),
    ],
    ids=["missing-path", "missing-column", "unreadable-file", "unknown-format"],
)
def test_unusable_inputs_are_clear_errors(hf_manager, tmp_path, make, match):
    with pytest.raises(CorpusError, match=match):
        embed_dataset(hf_manager, "hf", make(tmp_path), tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.parquet")) if (tmp_path / "out").exists() else True


BAD_ROWS = [{"id": "a", "text": "fine"}, {"id": "b", "text": None}, {"id": "c", "text": ""}, {"id": "d", "text": "ok"},
            {"id": "e"}, {"id": None, "text": "no id"}]


def test_bad_rows_fail_the_shard_naming_column_id_and_problem(hf_manager, tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", BAD_ROWS)
    with pytest.raises(CorpusError, match=r"column 'text', row id 'b' \(row 1\): text is null \(and 3 more bad rows"):
        embed_dataset(hf_manager, "hf", source, tmp_path / "out", id_column="id")
    assert not list((tmp_path / "out").glob("*.parquet")) and not list((tmp_path / "out").glob(".*.tmp"))


def test_skip_invalid_leaves_bad_rows_out_and_reports_them(hf_manager, tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", BAD_ROWS)
    report = embed_dataset(hf_manager, "hf", source, tmp_path / "out", id_column="id", skip_invalid=True)
    assert (report.rows, report.skipped, report.skipped_ids) == (2, 4, ("b", "c", "e", None))
    assert read_vectors(tmp_path / "out")[0] == ["a", "d"]
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["inputs"][0]["skipped"] == 4


def test_an_output_that_is_a_file_or_locked_or_shards_without_manifest(hf_manager, tmp_path, corpus):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BulkOutputError, match="exists and is not a directory"):
        embed_dataset(hf_manager, "hf", corpus, tmp_path / "file")
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "part-00000000-000000.parquet").write_bytes(b"")
    with pytest.raises(BulkOutputError, match="holds shards but no _embedding.json; pass --overwrite"):
        embed_dataset(hf_manager, "hf", corpus, orphan)
    locked = tmp_path / "locked"
    Store(locked).root.mkdir()
    with open(Store(locked).root / "lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(BulkOutputError, match="another bulk job is writing"):
            embed_dataset(hf_manager, "hf", corpus, locked)


def test_the_ray_engine_needs_a_spec_not_a_hand_built_manager(tmp_path, corpus):
    from .fakes import CharStats

    manager = EmbeddingGeneratorManager()
    manager.register_generator("chars", CharStats())
    with pytest.raises(InvalidInputError, match="the ray engine builds the generator on every worker from its spec"):
        embed_dataset(manager, "chars", corpus, tmp_path / "out", engine="ray")


def test_other_shard_rows_reshard_without_embedding_and_overwrite_starts_afresh(hf_manager, tmp_path, texts):
    source = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts[:40]])
    out = tmp_path / "out"
    embed_dataset(hf_manager, "hf", source, out, shard_rows=16)
    _, before = read_vectors(out)
    report = embed_dataset(hf_manager, "hf", source, out, shard_rows=20)
    assert (report.action, report.shards, report.embedded, report.unchanged) == ("sync", 2, 0, 40)
    assert np.array_equal(read_vectors(out)[1], before)  # copied, bit for bit
    report = embed_dataset(hf_manager, "hf", source, out, shard_rows=20, overwrite=True)
    assert (report.action, report.shards, report.embedded) == ("overwrite", 2, 40)
    assert len(list(out.glob("part-*.parquet"))) == 2


def test_a_second_input_is_appended_to_the_same_space(hf_manager, tmp_path, texts, reference):
    out = tmp_path / "out"
    first = write_jsonl(tmp_path / "a.jsonl", [{"id": f"a{i}", "text": t} for i, t in enumerate(texts[:30])])
    second = write_jsonl(tmp_path / "b.jsonl", [{"id": f"b{i}", "text": t} for i, t in enumerate(texts[30:50])])
    embed_dataset(hf_manager, "hf", first, out, id_column="id")
    with pytest.raises(BulkOutputError, match="holds the vectors of another input .*; pass --append"):
        embed_dataset(hf_manager, "hf", second, out, id_column="id")
    report = embed_dataset(hf_manager, "hf", second, out, id_column="id", append=True)
    assert (report.action, report.embedded) == ("append", 20)
    ids, vectors = read_vectors(out)
    order = np.argsort(ids)
    assert sorted(ids) == sorted([f"a{i}" for i in range(30)] + [f"b{i}" for i in range(20)])
    expected = {**{f"a{i}": reference[i] for i in range(30)}, **{f"b{i}": reference[30 + i] for i in range(20)}}
    assert max(np.abs(vectors[j] - expected[ids[j]]).max() for j in order) <= TOL
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["rows"] == 50 and [i["rows"] for i in manifest["inputs"]] == [30, 20]


def test_duplicates_are_embedded_once(hf_manager, tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in ["same text", "other", "same text"] * 5])
    stats = hf_manager.stats()["hf-minilm"]["texts"]
    report = embed_dataset(hf_manager, "hf", source, tmp_path / "out")
    _, vectors = read_vectors(tmp_path / "out")
    assert report.rows == 15 and np.array_equal(vectors[0], vectors[2])
    # the probes of each input type, then two unique texts: not fifteen
    assert hf_manager.stats()["hf-minilm"]["texts"] - stats == 3 * len(PROBES) + 2


# -- a job killed with SIGKILL, then run again -------------------------------------------------
def test_sigkill_then_rerun_gives_every_row_exactly_once(hf_manager, corpus, reference, tmp_path, default_spec):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "agent_embeddings", "bulk", "--spec", str(default_spec), "--input", str(corpus),
               "--id-column", "id", "--output", str(out), "--shard-rows", "100", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    staging = Store(out).root  # the snapshot being written, which readers do not see yet
    try:
        deadline = time.monotonic() + 240
        while len(list(staging.glob("snap-*/part-*.parquet"))) < 3 and job.poll() is None and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        time.sleep(np.random.default_rng().uniform(0, 0.3))  # anywhere inside the next shard
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait()
    assert job.returncode == -signal.SIGKILL, job.stderr.read().decode()[-2000:] if job.stderr else ""
    assert not out.exists()  # readers see no output until it is whole
    visible = sorted(staging.glob("snap-*/part-*.parquet"))
    assert 3 <= len(visible) < N // 100
    for path in visible:  # a written shard is a whole shard
        assert pq.read_table(path).num_rows == 100
    report = embed_dataset(hf_manager, "hf-minilm", corpus, out, id_column="id", shard_rows=100)
    assert report.resumed_shards == len(visible) and report.embedded == N - 100 * len(visible)
    ids, vectors = read_vectors(out)
    assert ids == [f"doc-{i}" for i in range(N)]  # every row exactly once, in order
    assert np.abs(vectors - reference).max() <= TOL
    assert not list(out.glob(".*.tmp"))


# -- remote backends against our own servers on loopback ---------------------------------------
def test_openai_backend_against_our_http_server(hf_manager, tmp_path, texts, reference):
    source = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts[:200]])
    with serve_in_thread(hf_manager) as server:
        spec = {"subject_id": "bulk", "models": [{
            "llm_type": "embeddings", "llm_block_id": "openai:hf-minilm",
            "llm_parameters": {"base_url": f"http://{server.address}/v1", "api_key": "sk-literal-secret-123",
                               "batch_size": 32},
        }]}
        with pytest.warns(UserWarning, match="holds a literal key"):
            report = embed_dataset(spec, "openai", source, tmp_path / "out", shard_rows=100, concurrency=4)
    assert report.rows == 200
    assert np.abs(read_vectors(tmp_path / "out")[1] - reference[:200]).max() <= TOL
    manifest = (tmp_path / "out" / MANIFEST).read_text()
    assert "sk-literal-secret-123" not in manifest and '"api_key": "**********"' in manifest


def test_finding_05_manifest_repr_describe_listings_and_errors_mask_url_credentials_and_headers(
    hf_manager, runner, tmp_path, texts
):
    password, query_token = "PASS-planted-in-userinfo-5a", "QUERY-planted-token-5b"
    h_auth, h_session = "custom-auth-planted-5c", "session-planted-5d"
    source = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts[:40]])
    secrets = (password, query_token, h_auth, h_session)
    with serve_in_thread(hf_manager) as server:
        def item(name: str, model: str, url: str) -> dict:
            return {"llm_type": "embeddings", "name": name, "llm_block_id": f"openai:{model}",
                    "llm_parameters": {"base_url": url, "api_key_required": False, "retry": {"attempts": 1},
                                       "default_headers": {"X-Custom-Auth": h_auth, "X-Session": h_session}}}

        userinfo = f"http://planted-user:{password}@{server.address}/v1"
        spec = {"subject_id": "bulk", "models": [
            item("userinfo", "hf-minilm", userinfo),
            item("query", "hf-minilm", f"{userinfo}?token={query_token}"),
            item("missing", "no-such-model", f"{userinfo}?token={query_token}"),
        ]}
        with EmbeddingGeneratorManager.from_subject_spec(spec) as manager:
            embed_dataset(manager, "userinfo", source, tmp_path / "a")
            first = (tmp_path / "a" / MANIFEST).read_text()
            assert password not in first and h_auth not in first and h_session not in first, first
            embed_dataset(manager, "query", source, tmp_path / "b")  # the query goes on every request
            with pytest.raises(RemoteNotFoundError) as missing:
                manager.embed("missing", ["x"])
            shown = [(tmp_path / "a" / MANIFEST).read_text(), (tmp_path / "b" / MANIFEST).read_text(),
                     repr(manager.spec), str(manager.spec.models[1]), repr(manager.get("query")),
                     str(manager.get("query").describe()), repr(manager.get("query").params),
                     str(manager.list_generators()), str(missing.value)]
            with serve_in_thread(manager) as listing:
                shown.append(httpx.get(f"http://{listing.address}/v1/models").text)
            grpc_server = runner.grpc_server(manager)
            try:
                from agent_embeddings.protocol.convert import pb
                from agent_embeddings.protocol.gen.aios.embeddings.v1.embeddings_pb2_grpc import EmbeddingServiceStub

                with grpc.insecure_channel(grpc_server.address) as channel:
                    shown.append(str(EmbeddingServiceStub(channel).Info(pb.InfoRequest(), timeout=30)))
            finally:
                runner.stop(grpc_server)
    manifest = json.loads(shown[1])["model_item"]["llm_parameters"]
    assert manifest["default_headers"] == {"X-Custom-Auth": "**********", "X-Session": "**********"}  # names stay
    assert manifest["base_url"] == f"http://**********@{server.address}/v1?token=**********"
    assert "HTTP 404" in shown[-3] and "**********@" in shown[-3]  # the error names the endpoint, masked
    for text in shown:
        for secret in secrets:
            assert secret not in text, (secret, text[:300])


def test_rate_limits_slow_the_job_down_instead_of_failing_it(hf_manager, tmp_path, texts, reference):
    """Two 429s with Retry-After: the spec's retry policy waits them out; every row arrives."""
    source = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts[:120]])
    with serve_in_thread(hf_manager) as upstream, faulty_front(
        f"http://{upstream.address}", [(429, {"Retry-After": "0.2"})] * 2
    ) as (front, base_url):
        spec = {"subject_id": "bulk", "models": [{
            "llm_type": "embeddings", "llm_block_id": "openai:hf-minilm",
            "llm_parameters": {"base_url": base_url, "api_key_required": False, "batch_size": 32,
                               "retry": {"attempts": 4, "initial_backoff_s": 0.05}},
        }]}
        with EmbeddingGeneratorManager.from_subject_spec(spec) as manager:
            report = embed_dataset(manager, "openai", source, tmp_path / "out", concurrency=2)
            retries = manager.stats()[manager.resolve("openai")]["retries"]
    assert front.injected == [429, 429] and retries == 2 and report.rows == 120
    assert np.abs(read_vectors(tmp_path / "out")[1] - reference[:120]).max() <= TOL


def test_aios_backend_against_our_grpc_server(hf_manager, runner, tmp_path, texts, reference):
    source = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts[:200]])
    server = runner.grpc_server(hf_manager)
    try:
        spec = {"subject_id": "bulk", "models": [{
            "llm_type": "embeddings", "llm_block_id": "aios:hf-minilm",
            "llm_parameters": {"grpc_url": server.address, "dims": 384},
        }]}
        report = embed_dataset(spec, "aios", source, tmp_path / "out", shard_rows=100)
    finally:
        runner.stop(server)
    assert report.rows == 200
    assert np.abs(read_vectors(tmp_path / "out")[1] - reference[:200]).max() <= TOL


# -- the CLI -----------------------------------------------------------------------------------
def test_cli_bulk_and_verify(tmp_path, capsys, texts, default_spec):
    source = write_jsonl(tmp_path / "c.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts[:20])])
    out = tmp_path / "out"
    args = ["bulk", "--spec", str(default_spec), "--input", str(source), "--output", str(out), "--id-column", "id"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith(f"build: 20 rows in 1 shard -> {out}")
    assert main(["bulk", "verify", "--spec", str(default_spec), "--output", str(out)]) == 0
    assert "'hf-minilm' same space" in capsys.readouterr().out
    spec = json.loads(default_spec.read_text())
    spec["models"][0]["llm_parameters"]["normalize"] = False
    other = tmp_path / "other.json"
    other.write_text(json.dumps(spec))
    assert main(["bulk", "verify", "--spec", str(other), "--output", str(out)]) == 1
    assert "does not embed into the space" in capsys.readouterr().err
    assert main(["bulk", "--spec", str(default_spec), "--output", str(out)]) == 1
    assert "bulk needs --input" in capsys.readouterr().err
    assert main([*args, "--engine", "local", "--input-type", "query"]) == 1
    assert "embedded as input_type 'document', this job asks for 'query'" in capsys.readouterr().err
