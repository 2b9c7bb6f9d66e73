"""An index that follows its corpus (issue 20): incremental sync, atomic snapshots, upgrades of old
outputs, appends, kept columns, search, compare and info. Real model, real files, a real SIGKILL."""

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

from agent_embeddings import EmbeddingGeneratorManager
from agent_embeddings.bulk import MANIFEST, embed_dataset
from agent_embeddings.bulk.source import Corpus
from agent_embeddings.bulk.store import Store
from agent_embeddings.cli import main
from agent_embeddings.errors import BulkOutputError, CorpusError
from agent_embeddings.space import PROBES
from benchmarks.data import short_sentences

N = 600


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def by_id(out: Path) -> dict:
    table = pq.read_table(out)  # plain pyarrow on the output path, as any reader
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    return dict(zip(table.column("id").to_pylist(), vectors))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return short_sentences(N + 20, seed=11)


def rows_of(texts: list[str], ids: range) -> list[dict]:
    return [{"id": f"doc-{i}", "text": texts[i], "title": f"title {i}"} for i in ids]


@pytest.fixture(scope="module")
def synced(hf_manager, texts, tmp_path_factory):
    """A 600-row corpus built, then edited (6 texts changed, 3 rows added, 3 removed) and synced."""
    base = tmp_path_factory.mktemp("sync")
    source = base / "corpus.jsonl"
    out = base / "vectors"
    write_jsonl(source, rows_of(texts, range(N)))
    built = embed_dataset(hf_manager, "hf", source, out, id_column="id", shard_rows=200)
    before = by_id(out)
    snapshot = out.resolve()
    rows = rows_of(texts, range(3, N + 3))  # doc-0..2 removed, doc-600..602 added
    changed = {f"doc-{i}" for i in range(100, 600, 100)} | {"doc-42"}
    for row in rows:
        if row["id"] in changed:
            row["text"] += " (edited)"
    write_jsonl(source, rows)
    report = embed_dataset(hf_manager, "hf", source, out, id_column="id", shard_rows=200)
    return {"source": source, "out": out, "built": built, "before": before, "report": report, "rows": rows,
            "changed": changed, "old_snapshot": snapshot}


def test_sync_brings_the_output_to_the_new_snapshot(synced, hf_manager):
    report, rows = synced["report"], synced["rows"]
    assert (report.action, report.added, report.changed, report.removed) == ("sync", 3, 6, 3)
    assert report.unchanged == N - 3 - 6 and report.embedded == 9 and report.rows == N
    after = by_id(synced["out"])
    assert list(after) == [r["id"] for r in rows]  # the new rows, each once, in input order
    unchanged = [r["id"] for r in rows if r["id"] in synced["before"] and r["id"] not in synced["changed"]]
    assert all(np.array_equal(after[i], synced["before"][i]) for i in unchanged)  # copied, bit for bit
    fresh = [r for r in rows if r["id"] in synced["changed"] or r["id"] not in synced["before"]]
    expected = hf_manager.encode("hf", [r["text"] for r in fresh], input_type="document")
    assert np.abs(np.stack([after[r["id"]] for r in fresh]) - expected).max() <= 1e-5


def test_the_manifest_records_each_sync_and_the_previous_snapshot_is_kept(synced):
    manifest = json.loads((synced["out"] / MANIFEST).read_text())
    build, sync = manifest["syncs"]
    assert build["kind"] == "build" and build["added"] == N and build["embedded"] == N
    assert (sync["kind"], sync["added"], sync["changed"], sync["removed"], sync["embedded"]) == ("sync", 3, 6, 3, 9)
    assert sync["fingerprint"] == manifest["inputs"][0]["fingerprint"] != build["fingerprint"]
    assert synced["old_snapshot"].is_dir() and synced["out"].resolve() != synced["old_snapshot"]  # for a rollback
    assert len(pq.read_table(synced["old_snapshot"])) == N  # the old snapshot, whole


def test_every_row_stores_the_hash_of_its_text_as_embedded(synced):
    import hashlib

    table = pq.read_table(synced["out"])
    row = table.slice(0, 1).to_pylist()[0]
    text = next(r["text"] for r in synced["rows"] if r["id"] == row["id"])
    assert row["content_hash"] == hashlib.blake2b(text.encode(), digest_size=16).digest()  # MiniLM: no prompt


def test_rerun_on_the_synced_input_does_nothing(synced, hf_manager):
    report = embed_dataset(hf_manager, "hf", synced["source"], synced["out"], id_column="id", shard_rows=200)
    assert (report.action, report.embedded, report.unchanged) == ("unchanged", 0, N)


def test_a_changed_input_without_ids_is_refused_with_the_way_to_sync(hf_manager, texts, tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts[:20]])
    embed_dataset(hf_manager, "hf", source, tmp_path / "out")
    write_jsonl(source, [{"text": t} for t in texts[1:21]])
    with pytest.raises(BulkOutputError, match="changed since it was embedded.*pass --id-column to sync"):
        embed_dataset(hf_manager, "hf", source, tmp_path / "out")
    assert len(pq.read_table(tmp_path / "out")) == 20  # nothing appended, nothing lost


def test_append_is_explicit_and_ids_stay_unique_across_inputs(hf_manager, texts, tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", rows_of(texts, range(0, 10)))
    second = write_jsonl(tmp_path / "b.jsonl", rows_of(texts, range(8, 15)))  # doc-8, doc-9 again
    out = tmp_path / "out"
    embed_dataset(hf_manager, "hf", first, out, id_column="id")
    with pytest.raises(CorpusError, match=r"ids already in .* from another input: 'doc-8', 'doc-9'"):
        embed_dataset(hf_manager, "hf", second, out, id_column="id", append=True)
    third = write_jsonl(tmp_path / "c.jsonl", rows_of(texts, range(10, 15)))
    report = embed_dataset(hf_manager, "hf", third, out, id_column="id", append=True)
    assert report.action == "append" and sorted(by_id(out)) == sorted(f"doc-{i}" for i in range(15))
    edited = rows_of(texts, range(0, 10))
    edited[0]["text"] += " (edited)"
    write_jsonl(first, edited)  # a sync of one input keeps the other's shards (hard links)
    report = embed_dataset(hf_manager, "hf", first, out, id_column="id")
    assert (report.action, report.changed, report.embedded) == ("sync", 1, 1) and len(by_id(out)) == 15


def test_kept_columns_make_the_output_searchable_alone(hf_manager, texts, tmp_path, capsys, default_spec):
    source = write_jsonl(tmp_path / "c.jsonl", rows_of(texts, range(50)))
    out = tmp_path / "out"
    embed_dataset(hf_manager, "hf", source, out, id_column="id", keep_columns=["text", "title"])
    assert pq.read_schema(next(out.glob("part-*.parquet"))).names == ["id", "embedding", "content_hash", "text",
                                                                       "title"]
    hits = hf_manager.search("hf", out, texts[7], k=3)
    assert hits[0].id == "doc-7" and hits[0].score > 0.99 and hits[0].columns == {"text": texts[7], "title": "title 7"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True) and len(hits) == 3
    assert main(["search", "--spec", str(default_spec), "--output", str(out), "--k", "2", "--json", texts[7]]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["id"] == "doc-7" and first["title"] == "title 7"


def test_search_streams_shards_and_equals_an_exhaustive_search(hf_manager, texts, tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", rows_of(texts, range(300)))
    out = tmp_path / "out"
    embed_dataset(hf_manager, "hf", source, out, id_column="id", shard_rows=64)
    vectors = by_id(out)
    ids, matrix = list(vectors), np.stack(list(vectors.values()))
    query = hf_manager.encode("hf", ["a man is eating"], input_type="query")[0]
    expected = [ids[i] for i in np.argsort(-(matrix @ query))[:10]]
    assert [h.id for h in hf_manager.search("hf", out, "a man is eating", k=10)] == expected


def test_info_reports_space_rows_inputs_syncs(synced, capsys):
    assert main(["bulk", "info", str(synced["out"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["space_id"] == synced["report"].space_id and info["rows"] == N and info["shards"] == 3
    assert [s["kind"] for s in info["syncs"]] == ["build", "sync"] and info["inputs"][0]["id_column"] == "id"
    assert main(["bulk", "info", str(synced["out"])]) == 0
    assert f"space {info['space_id']}" in capsys.readouterr().out


def test_compare_two_spaces_of_one_corpus(hf_manager, texts, tmp_path, capsys, default_spec):
    source = write_jsonl(tmp_path / "c.jsonl", rows_of(texts, range(200)))
    spec = json.loads(default_spec.read_text())
    other = dict(spec["models"][0], name="minilm-prompted")
    other["llm_parameters"] = {**other["llm_parameters"], "query_prompt": "query: ", "document_prompt": "passage: "}
    spec["models"].append(other)
    spec_path = tmp_path / "two.json"
    spec_path.write_text(json.dumps(spec))
    with EmbeddingGeneratorManager.from_subject_spec(spec_path) as manager:
        embed_dataset(manager, "hf-minilm", source, tmp_path / "old", id_column="id", keep_columns=["text"])
        embed_dataset(manager, "minilm-prompted", source, tmp_path / "new", id_column="id", keep_columns=["text"])
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join([texts[3], "a man eats", "the weather today", "a cat outside", "movies"]) + "\n")
    args = ["bulk", "compare", str(tmp_path / "old"), str(tmp_path / "new"), "--spec", str(spec_path),
            "--queries", str(queries), "--k", "5"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["queries"] == 5 and result["old_space"] != result["new_space"]
    assert 0.0 < result["mean_overlap"] < 1.0 and 0.0 <= result["top1_agreement"] <= 1.0
    worst = result["changed_most"][0]
    assert worst["overlap"] == min(r["overlap"] for r in result["changed_most"]) and "old_text" in worst
    assert main(args) == 0 and "mean overlap" in capsys.readouterr().out


# -- readers never see a half-synced output; a killed sync resumes ----------------------------
def test_a_sync_killed_midway_leaves_the_old_snapshot_then_completes(hf_manager, tmp_path, default_spec):
    texts = short_sentences(1000, seed=5)  # 10 shards: the kill lands after 3
    source = write_jsonl(tmp_path / "c.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    out = tmp_path / "out"
    embed_dataset(hf_manager, "hf", source, out, id_column="id", shard_rows=100)
    old = by_id(out)
    edited = [{"id": i, "text": f"{t} (v2)"} for i, t in enumerate(texts)]  # every text changes: a long sync
    write_jsonl(source, edited)
    command = [sys.executable, "-m", "agent_embeddings", "bulk", "--spec", str(default_spec), "--input", str(source),
               "--id-column", "id", "--output", str(out), "--shard-rows", "100", "--no-progress"]
    job = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    pending = Store(out).root
    try:
        deadline = time.monotonic() + 240
        while job.poll() is None and time.monotonic() < deadline:
            if len([p for p in pending.glob("snap-*/part-*.parquet") if p.parent != out.resolve()]) >= 3:
                break
            time.sleep(0.05)
        mid = by_id(out)  # a reader in the middle of the sync
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait()
    assert job.returncode == -signal.SIGKILL, job.stderr.read().decode()[-2000:] if job.stderr else ""
    assert mid.keys() == old.keys() and all(np.array_equal(mid[i], old[i]) for i in old)  # the old snapshot
    after_kill = by_id(out)
    assert all(np.array_equal(after_kill[i], old[i]) for i in old)
    report = embed_dataset(hf_manager, "hf", source, out, id_column="id", shard_rows=100)
    assert report.action == "sync" and report.resumed_shards >= 3 and report.rows == 1000
    new = by_id(out)
    assert list(new) == list(range(1000))  # every id once
    expected = hf_manager.encode("hf", [r["text"] for r in edited[:50]], input_type="document")
    assert np.abs(np.stack([new[i] for i in range(50)]) - expected).max() <= 1e-5


# -- an output written before this change ------------------------------------------------------
def make_version_1(out: Path, source: Path, manifest: dict) -> None:
    """What bulk wrote before snapshots: a plain directory, shards named by the input's fingerprint,
    no content hashes, a version-1 manifest (its probes for the job's input type only)."""
    fingerprint = Corpus.open(source, text_column="text", id_column="id").fingerprint()
    snapshot = out.resolve()
    os.unlink(out)
    out.mkdir()
    for index, path in enumerate(sorted(snapshot.glob("part-*.parquet"))):
        table = pq.read_table(path).select(["id", "embedding"])
        pq.write_table(table, out / f"part-{fingerprint[:8]}-{index:06d}.parquet")
    record = manifest["inputs"][0]
    (out / MANIFEST).write_text(json.dumps({
        "format": "agent-embeddings/bulk", "version": 1, "generator": manifest["generator"],
        "model_item": manifest["model_item"],
        "identity": {"provider": "hf", "model": manifest["identity"]["model"], "dims": 384, "dimensions": None,
                     "normalize": True, "input": "", "backend": "torch"},
        "dims": 384, "normalize": True, "input_type": "document", "dtype": "float32",
        "probes": {"texts": list(PROBES), "vectors": manifest["probes"]["vectors"]["document"]},
        "inputs": [{"source": record["source"], "fingerprint": fingerprint, "format": "json", "text_column": "text",
                    "id_column": "id", "shard_rows": record["shard_rows"], "shards": record["shards"],
                    "rows": record["rows"], "skipped": 0, "complete": True}],
        "rows": record["rows"],
    }))


@pytest.mark.parametrize("edit", [False, True], ids=["same-input", "changed-input"])
def test_an_output_of_version_1_is_upgraded_once_and_says_so(hf_manager, texts, tmp_path, edit):
    source = write_jsonl(tmp_path / "c.jsonl", rows_of(texts, range(40)))
    out = tmp_path / "out"
    embed_dataset(hf_manager, "hf", source, out, id_column="id", shard_rows=16)
    before = by_id(out)
    make_version_1(out, source, json.loads((out / MANIFEST).read_text()))
    assert hf_manager.verify_space("hf", out).ok  # verify reads version 1 (by its probes)
    if edit:
        rows = rows_of(texts, range(40))
        rows[5]["text"] += " (edited)"
        write_jsonl(source, rows)
    report = embed_dataset(hf_manager, "hf", source, out, id_column="id", shard_rows=16)
    assert report.action == "upgrade" and out.is_symlink() and report.rows == 40
    assert report.embedded == (40 if edit else 0)  # the vectors are vouched for only while the input is the same
    assert "upgrade:" in report.summary()
    after = by_id(out)
    assert all(np.array_equal(after[i], before[i]) for i in before if not (edit and i == "doc-5"))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["version"] == 2 and "content_hash" in pq.read_schema(next(out.glob("part-*.parquet"))).names
    again = embed_dataset(hf_manager, "hf", source, out, id_column="id", shard_rows=16)
    assert again.action == "unchanged"


def test_zero_copy_table_round_trip_keeps_float32(synced):
    table = pq.read_table(synced["out"], columns=["embedding"])
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
