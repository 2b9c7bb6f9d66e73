"""Shared storage: a corpus read through pyarrow's filesystems, and outputs that must be POSIX.

An object store cannot be reached from here, so the input goes through the very code an
``s3://`` or ``gs://`` URI takes (``pyarrow.fs.FileSystem.from_uri``, then listing, opening and
reading through the filesystem object) with pyarrow's local filesystem: a ``file://`` URI, and
a ``SubTreeFileSystem`` handed to ``embed_dataset``. Real model, real files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from agent_embeddings.bulk import MANIFEST, embed_dataset
from agent_embeddings.bulk.source import Corpus
from agent_embeddings.cli import main
from agent_embeddings.errors import BulkOutputError, CorpusError
from benchmarks.data import short_sentences

N = 60


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A directory of two Parquet files and a hidden one that readers skip."""
    root = tmp_path_factory.mktemp("store")
    corpus = root / "corpus"
    (corpus / "_tmp").mkdir(parents=True)
    texts = short_sentences(N, 5)
    pq.write_table(pa.table({"id": [f"a{i}" for i in range(40)], "text": texts[:40]}), corpus / "part-0.parquet",
                   row_group_size=16)
    pq.write_table(pa.table({"id": [f"b{i}" for i in range(20)], "text": texts[40:]}), corpus / "part-1.parquet")
    pq.write_table(pa.table({"id": ["x"], "text": ["not part of the corpus"]}), corpus / "_tmp" / "junk.parquet")
    return root


@pytest.fixture(scope="module")
def local(hf_manager, data, tmp_path_factory) -> pa.Table:
    out = tmp_path_factory.mktemp("store-local") / "vectors"
    embed_dataset(hf_manager, "hf", data / "corpus", out, id_column="id", shard_rows=25, progress=False)
    return pq.read_table(out)


def same_rows(out: Path, local: pa.Table) -> None:
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == local.column("id").to_pylist()
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert np.abs(vectors - np.stack(local.column("embedding").to_numpy(zero_copy_only=False))).max() <= 1e-6


def test_a_file_uri_input_reads_the_same_rows_through_pyarrow_s_filesystem(hf_manager, data, local, tmp_path):
    uri = (data / "corpus").as_uri()  # file:///...: FileSystem.from_uri, as s3://bucket/corpus would be
    corpus = Corpus.open(uri, text_column="text", id_column="id")
    assert isinstance(corpus.filesystem, pafs.LocalFileSystem) and corpus.source == uri
    assert [f.name for f in corpus.files] == ["part-0.parquet", "part-1.parquet"]  # _tmp/ left out
    assert corpus.fingerprint() == Corpus.open(data / "corpus", text_column="text", id_column="id").fingerprint()
    report = embed_dataset(hf_manager, "hf", uri, tmp_path / "vectors", id_column="id", shard_rows=25)
    assert (report.rows, report.shards) == (N, 3)
    same_rows(tmp_path / "vectors", local)
    assert json.loads((tmp_path / "vectors" / MANIFEST).read_text())["inputs"][0]["source"] == uri
    again = embed_dataset(hf_manager, "hf", uri, tmp_path / "vectors", id_column="id", shard_rows=25)
    assert again.action == "unchanged"  # the input is known again by its URI and fingerprint


def test_a_path_in_a_subtree_filesystem_is_read_through_it_and_synced_when_it_changes(
    hf_manager, data, local, tmp_path
):
    bucket = tmp_path / "bucket"  # what a bucket prefix looks like to the job: a SubTreeFileSystem
    (bucket / "corpus").mkdir(parents=True)
    for part in ("part-0.parquet", "part-1.parquet"):
        (bucket / "corpus" / part).write_bytes((data / "corpus" / part).read_bytes())
    store = pafs.SubTreeFileSystem(str(bucket), pafs.LocalFileSystem())
    out = tmp_path / "vectors"

    def run():
        return embed_dataset(hf_manager, "hf", "corpus", out, id_column="id", shard_rows=25, input_filesystem=store)

    assert run().action == "build"
    same_rows(out, local)
    assert run().action == "unchanged"
    table = pq.read_table(bucket / "corpus" / "part-1.parquet")
    texts = table.column("text").to_pylist()
    pq.write_table(table.set_column(1, "text", pa.array(["A changed text.", *texts[1:]])),
                   bucket / "corpus" / "part-1.parquet")
    synced = run()  # the change is seen through the filesystem (sizes, heads and tails), and synced
    assert (synced.action, synced.changed, synced.embedded, synced.rows) == ("sync", 1, 1, N)
    vectors = pq.read_table(out).to_pydict()
    changed = vectors["embedding"][vectors["id"].index("b0")]
    assert np.abs(np.array(changed) - hf_manager.encode("hf", ["A changed text."], input_type="document")[0]).max() \
        <= 1e-6


def test_bad_utf8_in_json_lines_through_a_filesystem_names_the_line(hf_manager, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.jsonl").write_bytes(b'{"id": 1, "text": "fine"}\n\n{"id": 2, "text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"rows\.jsonl, line 3: column 'text' is not valid UTF-8"):
        embed_dataset(hf_manager, "hf", (tmp_path / "in").as_uri(), tmp_path / "out", id_column="id")


def test_a_missing_input_uri_is_one_clear_error(hf_manager, tmp_path):
    uri = (tmp_path / "nowhere").as_uri()
    with pytest.raises(CorpusError, match=rf"^{uri}: no such file or directory$"):
        embed_dataset(hf_manager, "hf", uri, tmp_path / "out")


def test_an_object_store_output_is_refused_saying_what_to_do(hf_manager, data, tmp_path, capsys):
    with pytest.raises(BulkOutputError, match=r"^s3://bucket/vectors: the output must be a directory on a POSIX"):
        embed_dataset(hf_manager, "hf", data / "corpus", "s3://bucket/vectors", id_column="id")
    assert not Path("s3:").exists()
    code = main(["bulk", "--spec", "specs/default.json", "--input", str(data / "corpus"), "--output",
                 "gs://bucket/vectors", "--id-column", "id"])
    assert code != 0 and "POSIX" in capsys.readouterr().err
