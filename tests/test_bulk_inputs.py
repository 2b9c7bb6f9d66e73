"""``bulk`` against hostile inputs and outputs (issue 19, findings 22-28): every one is a clear,
one-line error or handled, and nothing half-written is left visible. Real model, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_embeddings.bulk import MANIFEST, embed_dataset
from agent_embeddings.cli import main
from agent_embeddings.errors import BulkOutputError, CorpusError, InvalidInputError

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["The cat sits outside.", "A man is eating food.", "The new movie is awesome.", "Agents need vectors."]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def table_of(out: Path) -> pa.Table:
    return pq.read_table(out)  # the directory, as any Parquet reader takes it


@pytest.fixture(scope="module")
def reference(hf_manager) -> np.ndarray:
    return hf_manager.encode("hf", TEXTS, input_type="document")


# -- 22: files of one directory with different schemas -----------------------------------------
def test_finding_22_string_and_large_string_files_are_one_corpus(hf_manager, tmp_path, reference):
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"id": pa.array([0, 1], pa.int32()), "text": pa.array(TEXTS[:2], pa.string())}),
                   data / "a.parquet")
    pq.write_table(pa.table({"id": pa.array([2, 3], pa.int64()), "text": pa.array(TEXTS[2:], pa.large_string())}),
                   data / "b.parquet")
    embed_dataset(hf_manager, "hf", data, tmp_path / "out", id_column="id")
    table = table_of(tmp_path / "out")
    assert table.column("id").to_pylist() == [0, 1, 2, 3]
    assert np.abs(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)) - reference).max() <= 1e-5


def test_finding_22_integer_and_string_ids_in_two_files_name_both(hf_manager, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "text": TEXTS[:2]}), data / "a.parquet")
    pq.write_table(pa.table({"id": ["x", "y"], "text": TEXTS[2:]}), data / "b.parquet")
    with pytest.raises(CorpusError) as caught:
        embed_dataset(hf_manager, "hf", data, tmp_path / "out", id_column="id")
    message = str(caught.value)
    assert "'id'" in message and "a.parquet" in message and "b.parquet" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


# -- 23: an output inside its input ----------------------------------------------------------
@pytest.mark.parametrize("where", ["inside", "equal"])
def test_finding_23_an_output_inside_or_equal_to_the_input_is_refused(hf_manager, tmp_path, where):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "corpus.jsonl", [{"text": t} for t in TEXTS])
    out = data / "vectors" if where == "inside" else data
    for overwrite in (False, True):
        with pytest.raises(BulkOutputError, match="the output is inside the input"):
            embed_dataset(hf_manager, "hf", data, out, overwrite=overwrite)
    assert sorted(p.name for p in data.iterdir()) == ["corpus.jsonl"]


# -- 24: JSON Lines that are not UTF-8 --------------------------------------------------------
def test_finding_24_invalid_utf8_names_file_and_line_and_writes_nothing(hf_manager, tmp_path):
    source = tmp_path / "latin1.jsonl"
    source.write_bytes(b'{"id": "a", "text": "ok"}\n\n{"id": "b", "text": "caf\xe9 au lait"}\n{"id": "c", "text": "x"}\n')
    with pytest.raises(CorpusError, match=r"latin1\.jsonl, line 3: column 'text' is not valid UTF-8"):
        embed_dataset(hf_manager, "hf", source, tmp_path / "out", id_column="id")
    assert not (tmp_path / "out").exists()  # no manifest, no lock, no folder


# -- 25: categorical and binary text columns ---------------------------------------------------
def test_finding_25_a_dictionary_encoded_text_column_is_decoded(hf_manager, tmp_path, reference):
    source = tmp_path / "categorical.parquet"
    pq.write_table(pa.table({"text": pa.array(TEXTS).dictionary_encode()}), source)
    embed_dataset(hf_manager, "hf", source, tmp_path / "out")
    got = np.stack(table_of(tmp_path / "out").column("embedding").to_numpy(zero_copy_only=False))
    assert np.abs(got - reference).max() <= 1e-5


def test_finding_25_a_binary_text_column_with_skip_invalid_is_read_as_utf8(hf_manager, tmp_path, reference):
    source = tmp_path / "binary.parquet"
    pq.write_table(pa.table({"text": pa.array([t.encode() for t in TEXTS], pa.binary())}), source)
    report = embed_dataset(hf_manager, "hf", source, tmp_path / "out", skip_invalid=True)
    assert (report.rows, report.skipped) == (4, 0)
    got = np.stack(table_of(tmp_path / "out").column("embedding").to_numpy(zero_copy_only=False))
    assert np.abs(got - reference).max() <= 1e-5


def test_a_column_of_numbers_is_not_a_text_column_even_with_skip_invalid(hf_manager, tmp_path):
    source = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), source)
    for skip in (False, True):
        with pytest.raises(CorpusError, match="column 'text' is int64, not a string"):
            embed_dataset(hf_manager, "hf", source, tmp_path / "out", skip_invalid=skip)


# -- 26: a damaged shard, a full disk ----------------------------------------------------------
def test_finding_26_a_truncated_shard_is_embedded_again_on_resume(hf_manager, tmp_path, reference):
    source = write_jsonl(tmp_path / "c.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])
    out = tmp_path / "out"
    embed_dataset(hf_manager, "hf", source, out, id_column="id", shard_rows=2)
    shard = sorted(out.glob("part-*.parquet"))[1]
    shard.write_bytes(shard.read_bytes()[:100])  # a disk or a copy that lost its tail
    report = embed_dataset(hf_manager, "hf", source, out, id_column="id", shard_rows=2)
    assert report.damaged_shards == (shard.name,) and report.embedded == 2 and "damaged" in report.summary()
    table = table_of(out)
    assert table.column("id").to_pylist() == ["d0", "d1", "d2", "d3"]
    assert np.abs(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)) - reference).max() <= 1e-5


DISK_FULL = """
import json, subprocess, sys
from pathlib import Path
from agent_embeddings.bulk import embed_dataset
from agent_embeddings.errors import BulkOutputError
source, disk, spec = map(Path, sys.argv[1:4])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "none", str(disk)], check=True)
out = disk / "out"
try:
    embed_dataset(spec, "hf", source, out, id_column="id", shard_rows=200)
    first = "no error"
except BulkOutputError as exc:
    first = str(exc)
written = sorted(p.name for p in (disk / ".out.bulk").glob("snap-*/part-*.parquet"))
subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
report = embed_dataset(spec, "hf", source, out, id_column="id", shard_rows=200)
print(json.dumps({"first": first, "written": written, "resumed": report.resumed_shards, "rows": report.rows}))
"""


@pytest.mark.skipif(
    subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0,
    reason="needs `unshare -rm` (a private mount namespace) to give the job a small tmpfs",
)
def test_finding_26_a_full_disk_keeps_the_shards_written_and_a_rerun_resumes(tmp_path, default_spec):
    rows = [{"id": f"d{i}", "text": f"{TEXTS[i % 4]} ({i})"} for i in range(600)]
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    disk = tmp_path / "disk"  # a 700 KB tmpfs: the manifest and one 200-row shard fit, the second does not
    disk.mkdir()
    script = tmp_path / "full.py"
    script.write_text(DISK_FULL)
    done = subprocess.run(
        ["unshare", "-rm", sys.executable, str(script), str(source), str(disk), str(default_spec)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "No space left on device" in result["first"] and "resumes" in result["first"], result
    assert "\n" not in result["first"] and len(result["written"]) >= 1
    assert (result["resumed"], result["rows"]) == (len(result["written"]), 600)


# -- 27: a hand-edited manifest -------------------------------------------------------------------
EDITS = {
    "ragged-probes": lambda m: m["probes"]["vectors"]["document"][1].pop(),
    "nan-probe": lambda m: m["probes"]["vectors"]["query"][0].__setitem__(0, float("nan")),
    "empty-probe-text": lambda m: m["probes"]["texts"].__setitem__(2, ""),
    "dims-10": lambda m: m.__setitem__("dims", 10),
    "dims-negative": lambda m: m.__setitem__("dims", -1),
    "one-probe": lambda m: m["probes"].update(texts=m["probes"]["texts"][:1],
                                              vectors={k: v[:1] for k, v in m["probes"]["vectors"].items()}),
}


@pytest.fixture(scope="module")
def small_output(hf_manager, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("manifest")
    source = write_jsonl(base / "c.jsonl", [{"text": t} for t in TEXTS])
    embed_dataset(hf_manager, "hf", source, base / "out")
    return source, base / "out"


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_finding_27_an_edited_manifest_is_refused_naming_the_field(hf_manager, small_output, tmp_path, edit):
    source, built = small_output
    out = tmp_path / "out"
    out.mkdir()
    manifest = json.loads((built / MANIFEST).read_text())
    EDITS[edit](manifest)
    (out / MANIFEST).write_text(json.dumps(manifest).replace("NaN", "NaN"))
    field = "dims" if edit.startswith("dims") else "probes"
    for attempt in (lambda: hf_manager.verify_space("hf", out), lambda: embed_dataset(hf_manager, "hf", source, out)):
        with pytest.raises(BulkOutputError, match=rf"not a valid bulk manifest: .*{field}") as caught:
            attempt()
        assert "\n" not in str(caught.value)


# -- 28: empty inputs, ids, arguments, one-line errors -------------------------------------------
def test_finding_28_zero_rows_make_one_empty_shard_with_the_schema(hf_manager, tmp_path):
    source = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), source)
    report = embed_dataset(hf_manager, "hf", source, tmp_path / "out", id_column="id")
    table = table_of(tmp_path / "out")
    assert report.rows == 0 and table.num_rows == 0
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)


def test_finding_28_duplicate_ids_are_refused_naming_them(hf_manager, tmp_path):
    rows = [{"id": i % 3, "text": f"{t} {i}"} for i, t in enumerate(TEXTS * 2)]
    with pytest.raises(CorpusError, match=r"duplicate ids: 0, 1, 2; ids must be unique"):
        embed_dataset(hf_manager, "hf", write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "out", id_column="id")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "ids", [[1.5, float("nan"), 2.0, 3.0], [[1], [2], [3], [4]], [{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}]],
    ids=["float", "list", "struct"],
)
def test_finding_28_only_integer_and_string_ids(hf_manager, tmp_path, ids):
    source = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": ids, "text": TEXTS}), source)
    with pytest.raises(CorpusError, match="ids must be integers or strings"):
        embed_dataset(hf_manager, "hf", source, tmp_path / "out", id_column="id")


@pytest.mark.parametrize(
    "argument", [{"shard_rows": True}, {"shard_rows": 0}, {"concurrency": 2.5}, {"workers": -1},
                 {"overwrite": "yes"}, {"id_column": 3}, {"gpus_per_worker": -1}],
    ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()),
)
def test_finding_28_the_python_api_checks_its_arguments(hf_manager, tmp_path, argument):
    source = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXTS])
    with pytest.raises(InvalidInputError, match=next(iter(argument))):
        embed_dataset(hf_manager, "hf", source, tmp_path / "out", **argument)
    assert not (tmp_path / "out").exists()


def test_finding_28_a_library_error_is_one_line_with_the_detail_kept(tmp_path, capsys, default_spec):
    source = tmp_path / "broken.csv"  # pyarrow's message quotes the bad row, newline included
    source.write_text('text,n\n"fine",1\n"two\nlines",2,3\n')
    with pytest.raises(CorpusError) as caught:
        embed_dataset(default_spec, "hf", source, tmp_path / "out")
    assert "\n" not in str(caught.value) and str(source) in str(caught.value) and "CSV parse error" in str(caught.value)
    assert caught.value.detail is not None and "two\nlines" in caught.value.detail
    assert main(["bulk", "--spec", str(default_spec), "--input", str(source), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("agent-embeddings: error:") == 1 and len(err.strip().splitlines()) == 1
