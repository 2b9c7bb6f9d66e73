"""The corpus: Parquet, JSON Lines or CSV files read as a stream of deterministic shards.

Shard ``k`` is always the input rows ``[k * shard_rows, (k + 1) * shard_rows)`` in file order,
so a job that is killed and run again, or a Ray worker that reads one shard on its own,
finds the same rows in the same shard. Nothing reads the corpus whole: the local engine
streams it (:meth:`Corpus.shards`), a Ray worker reads one shard (:meth:`Corpus.read_shard`).

The input is a local path, or a URI that pyarrow's filesystems resolve (``s3://bucket/corpus/``,
``gs://...``, ``hdfs://...``, ``file:///...``), or a path inside a given ``pyarrow.fs``
filesystem (``filesystem=``): then every file is listed, opened and read through that
filesystem, the same code for every store.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from .._deps import require
from ..errors import CorpusError
from .storage import from_uri, list_files

__all__ = ["FORMATS", "Corpus", "Shard"]

# File suffix -> pyarrow.dataset format.
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "json", ".ndjson": "json", ".json": "json",
           ".csv": "csv"}
_READ_ROWS = 8192  # rows per Arrow batch while streaming
_SAMPLE = 64 * 1024  # bytes of each file's head and tail in the fingerprint


@dataclass
class Shard:
    """Rows ``[start, start + len(texts))`` of the corpus: ids and texts as Arrow arrays."""

    index: int
    start: int
    ids: Any  # pyarrow.Array
    texts: Any  # pyarrow.Array
    kept: dict[str, Any] = field(default_factory=dict)  # --keep-columns: name -> pyarrow.Array

    def __len__(self) -> int:
        return len(self.texts)


def _pa() -> Any:
    return require("pyarrow", "bulk", who="agent-embeddings bulk")


@dataclass
class Corpus:
    """A corpus on disk: one file or a directory of files of one format.

    >>> corpus = Corpus.open("corpus.parquet", text_column="text", id_column="id")  # doctest: +SKIP
    >>> next(corpus.shards(10_000)).texts[:2]                                         # doctest: +SKIP
    """

    path: PurePath  # a Path, unless the corpus is in ``filesystem``
    files: tuple[PurePath, ...]
    format: str
    text_column: str
    id_column: str | None = None
    #: input columns copied into the output beside id and embedding (--keep-columns)
    keep_columns: tuple[str, ...] = ()
    _file_rows: dict[int, int] = field(default_factory=dict, repr=False)
    #: the type every file's column is read as (see :meth:`_plan_types`)
    _types: dict[str, Any] = field(default_factory=dict, repr=False)
    #: a ``pyarrow.fs.FileSystem`` that ``path`` and ``files`` are in; None: the local filesystem
    filesystem: Any = field(default=None, repr=False)
    #: the input as the user named it (a URI), for messages and the manifest; None: ``str(path)``
    uri: str | None = None

    @classmethod
    def open(
        cls, path: str | Path, *, text_column: str, id_column: str | None = None, keep_columns: tuple[str, ...] = (),
        filesystem: Any = None,
    ) -> Corpus:
        """Find the files and check that the columns exist; a clear :class:`CorpusError` if not.

        ``path`` is local, or a URI pyarrow resolves (``s3://bucket/corpus/``), or a path in
        ``filesystem`` (a ``pyarrow.fs.FileSystem``).
        """
        uri = None
        if filesystem is None and isinstance(path, str) and "://" in path:
            filesystem, path, uri = *from_uri(path), path
        root: PurePath
        files: list[PurePath]
        if filesystem is not None:
            uri = uri or f"{filesystem.type_name}://{getattr(filesystem, 'base_path', '')}{path}"
            root, files = list_files(filesystem, str(path), uri, FORMATS)
        else:
            local = root = Path(path)
            if not local.exists():
                raise CorpusError(f"{local}: no such file or directory")
            if local.is_dir():
                files = sorted(
                    p for p in local.rglob("*")
                    if p.is_file() and p.suffix.lower() in FORMATS
                    and not any(part.startswith((".", "_")) for part in p.relative_to(local).parts)
                )
                if not files:
                    raise CorpusError(f"{local}: no {', '.join(sorted(FORMATS))} files in this directory")
            else:
                files = [local]
        shown = uri or root
        formats = {FORMATS.get(p.suffix.lower()) for p in files}
        if None in formats:
            raise CorpusError(f"{shown}: unknown input format {root.suffix!r}; use {', '.join(sorted(FORMATS))}")
        if len(formats) > 1:
            raise CorpusError(f"{shown}: mixes formats ({', '.join(sorted(str(f) for f in formats))}); use one")
        reserved = {"id", "embedding", "content_hash"} - {id_column or ""}
        clash = sorted(set(keep_columns) & reserved)
        if clash:
            raise CorpusError(f"--keep-columns {', '.join(clash)}: the output has a column of that name already")
        keep = tuple(c for c in dict.fromkeys(keep_columns) if c != id_column)
        corpus = cls(root, tuple(files), str(formats.pop()), text_column, id_column, keep, filesystem=filesystem,
                     uri=uri)
        corpus._plan_types()
        return corpus

    @property
    def source(self) -> str:
        """The input as the user named it: a path, or a URI."""
        return self.uri or str(self.path)

    @contextlib.contextmanager
    def _opened(self, file: PurePath) -> Iterator[Any]:
        """What pyarrow's readers take for ``file``: its path when local, else an open file of the filesystem."""
        if self.filesystem is None:
            yield str(file)
        else:
            with self.filesystem.open_input_file(file.as_posix()) as handle:
                yield handle

    # -- reading -------------------------------------------------------------------------
    def _format(self) -> Any:
        ds = require("pyarrow.dataset", "bulk", who="agent-embeddings bulk")
        if self.format == "csv":
            return ds.CsvFileFormat(convert_options=self._csv_options())
        if self.format == "json":
            return ds.JsonFileFormat(parse_options=self._json_options())
        return ds.ParquetFileFormat()

    def _csv_options(self, include_columns: list[str] | None = None) -> Any:
        """A column of digits must still be read as text."""
        csv = require("pyarrow.csv", "bulk")
        types = {self.text_column: _pa().string()}
        return csv.ConvertOptions(column_types=types, include_columns=include_columns or [])

    def _json_options(self) -> Any:
        json = require("pyarrow.json", "bulk")
        schema = _pa().schema([(self.text_column, _pa().string())])
        return json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")

    def _dataset(self, files: tuple[PurePath, ...] | None = None) -> Any:
        ds = require("pyarrow.dataset", "bulk", who="agent-embeddings bulk")
        try:
            return ds.dataset([f.as_posix() if self.filesystem else str(f) for f in files or self.files],
                              format=self._format(), filesystem=self.filesystem)
        except (OSError, _pa().ArrowException) as exc:
            raise CorpusError.from_library(f"{self.path}: cannot read as {self.format}", exc) from None

    def _file_schema(self, file: PurePath) -> Any:
        """One file's schema: a Parquet footer, or what the CSV/JSON reader infers from its first block."""
        try:
            with self._opened(file) as source:
                if self.format == "parquet":
                    return require("pyarrow.parquet", "bulk").read_schema(source)
                if self.format == "csv":
                    return require("pyarrow.csv", "bulk").open_csv(source, convert_options=self._csv_options()).schema
                # inferred, not forced: the explicit text type of _json_options would invent a missing column
                return require("pyarrow.json", "bulk").open_json(source).schema
        except (OSError, _pa().ArrowException) as exc:
            raise CorpusError.from_library(f"{file}: cannot read as {self.format}", exc) from None

    def _plan_types(self) -> None:
        """Check the columns of every file and choose the one type each is read as.

        Files of one directory need not agree on the exact type: ``string`` and ``large_string``,
        a dictionary-encoded (categorical) text column, UTF-8 in a binary column, and integer ids
        of any width are read as one type. What cannot be unified (integer ids in one file,
        string ids in another; a text column of numbers) is refused, naming the files.
        """
        found: dict[str, list[tuple[PurePath, Any]]] = {c: [] for c in self.columns}
        roles = [("text", self.text_column), ("id", self.id_column), *(("kept", c) for c in self.keep_columns)]
        for file in self.files:
            schema = self._file_schema(file)
            for role, column in roles:
                if column is None:
                    continue
                if column not in schema.names:
                    where = self.path if file == self.path else file
                    raise CorpusError(
                        f"{where}: no {role} column {column!r}; its columns: {', '.join(schema.names) or 'none'}"
                    )
                found[column].append((file, schema.field(column).type))
        for column in self.keep_columns:
            self._types[column] = found[column][0][1]  # the first file's type; the others are cast to it
        self._types[self.text_column] = _text_type(self.text_column, found[self.text_column])
        if self.id_column is not None:
            self._types[self.id_column] = _id_type(self.id_column, found[self.id_column])

    @property
    def columns(self) -> list[str]:
        """The columns read: text, id, kept (each once)."""
        wanted = [self.text_column, *([self.id_column] if self.id_column else []), *self.keep_columns]
        return list(dict.fromkeys(wanted))

    def _batches(self, files: tuple[PurePath, ...], columns: tuple[str, ...] | None = None) -> Iterator[Any]:
        """Record batches of the wanted columns, in file and row order, read as they are consumed,
        each column cast to the corpus's type for it (:meth:`_plan_types`).

        Each file is read by a synchronous streaming reader, not by ``pyarrow.dataset``'s scanner:
        the scanner reads ahead while the model (the bottleneck) works, and its buffered batches
        grew a job's memory with the corpus (1 GB over 2,000,000 rows).
        """
        wanted = list(columns or self.columns)
        for file in files:
            row = 0
            try:
                for batch in self._file_batches(file, wanted):
                    yield self._conform(batch, file, row, wanted)
                    row += batch.num_rows
            except (OSError, _pa().ArrowException) as exc:
                raise CorpusError.from_library(f"{file}: cannot read as {self.format}", exc) from None

    def _conform(self, batch: Any, file: PurePath, first_row: int, wanted: list[str]) -> Any:
        """``batch`` with each column as its planned type; text that is not valid UTF-8 is refused,
        naming the file and the line (a reader may pass such bytes through unchecked)."""
        pa = _pa()
        columns = []
        for name in wanted:
            column = batch.column(name)
            target = self._types.get(name)
            if target is not None and column.type != target:
                try:
                    column = column.cast(target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    if name == self.text_column:
                        raise self._bad_text(file, first_row, batch.column(name), name) from None
                    raise CorpusError(
                        f"{file}: column {name!r} is {column.type}, which cannot be read as {target} (its type in "
                        f"{self.files[0]})"
                    ) from None
            if name == self.text_column and target is not None:
                try:
                    column.validate(full=True)
                except pa.ArrowInvalid:
                    raise self._bad_text(file, first_row, column, name) from None
            columns.append(column)
        return pa.RecordBatch.from_arrays(columns, names=wanted)

    def _bad_text(self, file: PurePath, first_row: int, column: Any, name: str) -> CorpusError:
        """The error for a value that is not UTF-8 (or not castable): its file, row and, for JSON Lines, line."""
        pa = _pa()
        raw = column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
        offset = _first_not_utf8(raw.cast(pa.binary()).to_pylist())
        if offset is None:
            return CorpusError(f"{file}: column {name!r} cannot be read as {self._types[name]}")
        row = first_row + offset
        where = f"line {_json_line(self._binary(file), row)}" if self.format == "json" else f"row {row}"
        return CorpusError(
            f"{file}, {where}: column {name!r} is not valid UTF-8; convert the file to UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)"
        )

    def _file_batches(self, file: PurePath, columns: list[str]) -> Iterator[Any]:
        with self._opened(file) as source:
            if self.format == "parquet":
                pq = require("pyarrow.parquet", "bulk")
                with pq.ParquetFile(source) as reader:
                    yield from reader.iter_batches(batch_size=_READ_ROWS, columns=columns, use_threads=False)
            elif self.format == "csv":
                csv = require("pyarrow.csv", "bulk")
                yield from csv.open_csv(source, convert_options=self._csv_options(columns))
            else:
                json = require("pyarrow.json", "bulk")
                for batch in json.open_json(source, parse_options=self._json_options()):
                    yield batch.select(columns)

    def _shard_of(self, index: int, start: int, batches: list[Any]) -> Shard:
        pa = _pa()
        table = pa.Table.from_batches(batches, schema=batches[0].schema) if batches else None

        def column(name: str) -> Any:
            if table is not None:
                return table.column(name).combine_chunks()
            return pa.array([], self._types.get(name) or pa.string())

        texts = column(self.text_column)
        ids = pa.array(range(start, start + len(texts)), pa.int64()) if self.id_column is None else column(self.id_column)
        return Shard(index, start, ids, texts, {name: column(name) for name in self.keep_columns})

    def shards(self, shard_rows: int) -> Iterator[Shard]:
        """Every shard, in order, streaming: at most one shard and one read batch in memory.

        A corpus without rows makes one empty shard, so that the output still has the schema.
        """
        pending: list[Any] = []
        held = start = index = 0
        for batch in self._batches(self.files):
            offset = 0
            while offset < batch.num_rows:
                take = min(shard_rows - held, batch.num_rows - offset)
                pending.append(batch.slice(offset, take))
                held += take
                offset += take
                if held == shard_rows:
                    yield self._shard_of(index, start, pending)
                    pending, held, start, index = [], 0, start + shard_rows, index + 1
        if held or index == 0:
            yield self._shard_of(index, start, pending)

    def shard_count(self, shard_rows: int) -> int:
        """How many shards :meth:`shards` makes (at least one)."""
        return max(1, -(-self.count_rows() // shard_rows))

    def ids(self) -> Any:
        """Every row's id, in order (one read of the id column; row numbers without one)."""
        pa = _pa()
        if self.id_column is None:
            return pa.array(range(self.count_rows()), pa.int64())
        id_type = self._types.get(self.id_column) or pa.string()
        parts = [batch.column(self.id_column) for batch in self._batches(self.files, (self.id_column,))]
        return pa.concat_arrays(parts) if parts else pa.array([], id_type)

    def file_rows(self, number: int) -> int:
        """Rows in file ``number`` (Parquet: from its footer; JSON Lines/CSV: one counting pass, remembered)."""
        if number not in self._file_rows:
            try:
                self._file_rows[number] = int(self._dataset((self.files[number],)).count_rows())
            except (OSError, _pa().ArrowException) as exc:
                raise CorpusError.from_library(f"{self.files[number]}: cannot read as {self.format}", exc) from None
        return self._file_rows[number]

    def count_rows(self) -> int:
        """Rows in the corpus (Parquet: footers; JSON Lines/CSV: one counting pass per file, remembered)."""
        return sum(self.file_rows(n) for n in range(len(self.files)))

    def read_shard(self, index: int, shard_rows: int) -> Shard:
        """Shard ``index`` alone (what a Ray worker reads); equal to the one :meth:`shards` yields."""
        start, stop = index * shard_rows, (index + 1) * shard_rows
        pieces: list[Any] = []
        first = 0  # global row number of the current file's first row
        for number, file in enumerate(self.files):
            rows = self.file_rows(number)
            if first + rows > start and first < stop:
                lo, hi = max(start - first, 0), min(stop - first, rows)
                pieces.extend(self._file_slice(file, lo, hi))
            first += rows
            if first >= stop:
                break
        return self._shard_of(index, start, pieces)

    def _file_slice(self, file: PurePath, lo: int, hi: int) -> list[Any]:
        """Rows ``[lo, hi)`` of one file; Parquet reads only the row groups that hold them."""
        if self.format == "parquet":
            pq = require("pyarrow.parquet", "bulk")
            with self._opened(file) as source, pq.ParquetFile(source) as reader:
                groups: list[int] = []
                skipped = first = 0
                for g in range(reader.num_row_groups):
                    n = reader.metadata.row_group(g).num_rows
                    if first + n > lo and first < hi:
                        if not groups:
                            skipped = first
                        groups.append(g)
                    first += n
                table = reader.read_row_groups(groups, columns=self.columns)
            out, row = [], lo
            for batch in table.slice(lo - skipped, hi - lo).to_batches():
                out.append(self._conform(batch, file, row, self.columns))
                row += batch.num_rows
            return out
        out, first = [], 0
        for batch in self._batches((file,)):
            n = batch.num_rows
            if first + n > lo and first < hi:
                out.append(batch.slice(max(lo - first, 0), min(hi, first + n) - max(lo, first)))
            first += n
            if first >= hi:
                break
        return out

    # -- identity ------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """What identifies this input cheaply: file names, sizes, first and last 64 KiB, columns.

        A resumed job must read the same rows into the same shards; a changed file (almost
        always a changed size or head/tail) is refused rather than mixed in.
        """
        digest = hashlib.sha256()
        base = self.path.parent if self.files == (self.path,) else self.path
        for file in self.files:
            with self._binary(file) as fh:
                size = fh.seek(0, 2)
                fh.seek(0)
                digest.update(f"{file.relative_to(base).as_posix()}\0{size}\0".encode())
                digest.update(fh.read(_SAMPLE))
                if size > _SAMPLE:
                    fh.seek(max(size - _SAMPLE, _SAMPLE))
                    digest.update(fh.read(_SAMPLE))
        digest.update(f"{self.format}\0{self.text_column}\0{self.id_column}".encode())
        return digest.hexdigest()[:16]

    def _binary(self, file: PurePath) -> Any:
        """``file`` opened for reading bytes, with seek (a local file, or the filesystem's random-access file)."""
        return open(file, "rb") if self.filesystem is None else self.filesystem.open_input_file(file.as_posix())


# -- column types ------------------------------------------------------------------------------
def _text_kind(kind: Any) -> str | None:
    """'text', 'bytes' (UTF-8 to decode), 'null' (an all-null column), or None (not text at all)."""
    pa = _pa()
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or getattr(pa.types, "is_string_view", bool)(kind):
        return "text"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or getattr(pa.types, "is_binary_view", bool)(kind):
        return "bytes"
    return "null" if pa.types.is_null(kind) else None


def _text_type(column: str, found: list[tuple[PurePath, Any]]) -> Any:
    """The type a text column is read as: ``large_string`` if any file has it, else ``string``."""
    pa = _pa()
    for file, kind in found:
        if _text_kind(kind) is None:
            raise CorpusError(
                f"{file}: column {column!r} is {kind}, not a string; --text-column must name a column of texts"
            )
    large = any(pa.types.is_large_string(k) or pa.types.is_large_binary(k) for _, k in found)
    return pa.large_string() if large else pa.string()


def _id_type(column: str, found: list[tuple[PurePath, Any]]) -> Any:
    """``int64`` when every file's ids are integers, ``string`` when they are strings; else an error."""
    pa = _pa()
    kinds: dict[str, PurePath] = {}
    for file, kind in found:
        value = kind.value_type if pa.types.is_dictionary(kind) else kind
        if pa.types.is_integer(value):
            kinds.setdefault("integer", file)
        elif _text_kind(value) == "text":
            kinds.setdefault("string", file)
        elif not pa.types.is_null(value):
            raise CorpusError(
                f"{file}: id column {column!r} is {kind}; ids must be integers or strings "
                "(a float id can be NaN or lose digits; lists and structs are not ids)"
            )
    if len(kinds) > 1:
        raise CorpusError(
            f"id column {column!r} holds integers in {kinds['integer']} but strings in {kinds['string']}; "
            "give every file one id type"
        )
    return pa.int64() if "integer" in kinds else pa.string()


def _first_not_utf8(values: list[Any]) -> int | None:
    for offset, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return offset
    return None


def _json_line(handle: Any, row: int) -> int:
    """The 1-based line of JSON Lines record ``row`` (blank lines hold no record). ``handle`` is a
    binary file, local or a filesystem's (read in blocks: a pyarrow file does not iterate lines)."""
    seen, number, rest = -1, 0, b""
    with handle as fh:
        while True:
            block = fh.read(1 << 20)
            lines = (rest + block).split(b"\n")
            rest = lines.pop() if block else b""
            for line in lines:
                number += 1
                if line.strip():
                    seen += 1
                    if seen == row:
                        return number
            if not block:
                return row + 1
