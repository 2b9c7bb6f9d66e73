"""The corpus: Parquet, JSON Lines or CSV files read as a stream of deterministic shards.

Shard ``k`` is always the input rows ``[k * shard_rows, (k + 1) * shard_rows)`` in file order,
so a job that is killed and run again, or a Ray worker that reads one shard on its own,
finds the same rows in the same shard. Nothing reads the corpus whole: the local engine
streams it (:meth:`Corpus.shards`), a Ray worker reads one shard (:meth:`Corpus.read_shard`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._deps import require
from ..errors import CorpusError

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

    path: Path
    files: tuple[Path, ...]
    format: str
    text_column: str
    id_column: str | None = None
    _file_rows: dict[int, int] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | Path, *, text_column: str, id_column: str | None = None) -> Corpus:
        """Find the files and check that the columns exist; a clear :class:`CorpusError` if not."""
        path = Path(path)
        if not path.exists():
            raise CorpusError(f"{path}: no such file or directory")
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in FORMATS
                and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            )
            if not files:
                raise CorpusError(f"{path}: no {', '.join(sorted(FORMATS))} files in this directory")
        else:
            files = [path]
        formats = {FORMATS.get(p.suffix.lower()) for p in files}
        if None in formats:
            raise CorpusError(f"{path}: unknown input format {path.suffix!r}; use {', '.join(sorted(FORMATS))}")
        if len(formats) > 1:
            raise CorpusError(f"{path}: mixes formats ({', '.join(sorted(str(f) for f in formats))}); use one")
        corpus = cls(path, tuple(files), str(formats.pop()), text_column, id_column)
        corpus._check_columns()
        return corpus

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

    def _dataset(self, files: tuple[Path, ...] | None = None) -> Any:
        ds = require("pyarrow.dataset", "bulk", who="agent-embeddings bulk")
        try:
            return ds.dataset([str(f) for f in files or self.files], format=self._format())
        except (OSError, _pa().ArrowException) as exc:
            raise CorpusError(f"{self.path}: cannot read as {self.format}: {exc}") from None

    def _check_columns(self) -> None:
        names = self._dataset().schema.names
        for role, column in (("text", self.text_column), ("id", self.id_column)):
            if column is not None and column not in names:
                raise CorpusError(
                    f"{self.path}: no {role} column {column!r}; its columns: {', '.join(names) or 'none'}"
                )

    @property
    def columns(self) -> list[str]:
        return [self.text_column] + ([self.id_column] if self.id_column else [])

    def _batches(self, files: tuple[Path, ...]) -> Iterator[Any]:
        """Record batches of the wanted columns, in file and row order, read as they are consumed.

        Each file is read by a synchronous streaming reader, not by ``pyarrow.dataset``'s scanner:
        the scanner reads ahead while the model (the bottleneck) works, and its buffered batches
        grew a job's memory with the corpus (1 GB over 2,000,000 rows).
        """
        try:
            for file in files:
                yield from self._file_batches(file)
        except (OSError, _pa().ArrowException) as exc:
            raise CorpusError(f"{self.path}: cannot read as {self.format}: {exc}") from None

    def _file_batches(self, file: Path) -> Iterator[Any]:
        if self.format == "parquet":
            pq = require("pyarrow.parquet", "bulk")
            with pq.ParquetFile(str(file)) as reader:
                yield from reader.iter_batches(batch_size=_READ_ROWS, columns=self.columns, use_threads=False)
        elif self.format == "csv":
            csv = require("pyarrow.csv", "bulk")
            yield from csv.open_csv(str(file), convert_options=self._csv_options(self.columns))
        else:
            json = require("pyarrow.json", "bulk")
            for batch in json.open_json(str(file), parse_options=self._json_options()):
                yield batch.select(self.columns)

    def _shard_of(self, index: int, start: int, batches: list[Any]) -> Shard:
        pa = _pa()
        table = pa.Table.from_batches(batches, schema=batches[0].schema) if batches else None
        texts = table.column(self.text_column).combine_chunks() if table is not None else pa.array([], pa.string())
        if self.id_column is None:
            ids = pa.array(range(start, start + len(texts)), pa.int64())
        else:
            ids = table.column(self.id_column).combine_chunks() if table is not None else pa.array([])
        return Shard(index, start, ids, texts)

    def shards(self, shard_rows: int) -> Iterator[Shard]:
        """Every shard, in order, streaming: at most one shard and one read batch in memory."""
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
        if held:
            yield self._shard_of(index, start, pending)

    def file_rows(self, number: int) -> int:
        """Rows in file ``number`` (Parquet: from its footer; JSON Lines/CSV: one counting pass, remembered)."""
        if number not in self._file_rows:
            try:
                self._file_rows[number] = int(self._dataset((self.files[number],)).count_rows())
            except (OSError, _pa().ArrowException) as exc:
                raise CorpusError(f"{self.files[number]}: cannot read as {self.format}: {exc}") from None
        return self._file_rows[number]

    def count_rows(self) -> int | None:
        """Rows in the corpus when that is cheap to know (Parquet footers), else None."""
        if self.format != "parquet":
            return None
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

    def _file_slice(self, file: Path, lo: int, hi: int) -> list[Any]:
        """Rows ``[lo, hi)`` of one file; Parquet reads only the row groups that hold them."""
        if self.format == "parquet":
            pq = require("pyarrow.parquet", "bulk")
            with pq.ParquetFile(str(file)) as reader:
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
            return list(table.slice(lo - skipped, hi - lo).to_batches())
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
        base = self.path if self.path.is_dir() else self.path.parent
        for file in self.files:
            size = file.stat().st_size
            digest.update(f"{file.relative_to(base).as_posix()}\0{size}\0".encode())
            with open(file, "rb") as fh:
                digest.update(fh.read(_SAMPLE))
                if size > _SAMPLE:
                    fh.seek(max(size - _SAMPLE, _SAMPLE))
                    digest.update(fh.read(_SAMPLE))
        digest.update(f"{self.format}\0{self.text_column}\0{self.id_column}".encode())
        return digest.hexdigest()[:16]
