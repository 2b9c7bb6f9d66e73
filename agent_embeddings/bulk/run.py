"""``embed_dataset``: check the output against the generator, then let an engine fill it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._deps import require
from ..errors import BulkOutputError, CorpusError, EmbeddingSpaceError, InvalidInputError
from ..redaction import redact_params
from ..space import PROBES, check_space, space_identity
from ..vectors import InputType, check_input_type
from .job import DEFAULT_SHARD_ROWS, BulkReport, Job, Progress
from .local import run_local
from .manifest import MANIFEST, InputRecord, Manifest, Probes
from .shard import ShardResult, read_result, write_error
from .source import Corpus

if TYPE_CHECKING:
    from ..manager import EmbeddingGeneratorManager
    from ..specs import SpecSource, SubjectSpec

__all__ = ["embed_dataset"]

Engine = Literal["local", "ray"]


def embed_dataset(
    spec: SpecSource | SubjectSpec | EmbeddingGeneratorManager,
    name: str,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    text_column: str = "text",
    id_column: str | None = None,
    engine: Engine = "local",
    input_type: InputType | None = "document",
    shard_rows: int = DEFAULT_SHARD_ROWS,
    skip_invalid: bool = False,
    overwrite: bool = False,
    concurrency: int = 1,
    progress: bool | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
) -> BulkReport:
    """Embed column ``text_column`` of ``input`` (Parquet, JSON Lines or CSV; a file or a directory)
    with generator ``name`` of ``spec`` into Parquet shards under ``output``.

    Run again with the same arguments after an interruption, it resumes: completed shards are
    kept, the others are embedded. An output made by another generator is refused
    (:class:`EmbeddingSpaceError`), as is one whose probe vectors this generator no longer
    reproduces. ``overwrite=True`` starts afresh.

    >>> report = embed_dataset("specs/default.json", "hf-minilm", "corpus.parquet", "vectors/",
    ...                        text_column="text", id_column="id")     # doctest: +SKIP
    >>> report.rows, report.shards                                      # doctest: +SKIP
    (25000, 3)
    """
    from ..manager import EmbeddingGeneratorManager

    _check_arguments(
        engine=engine, shard_rows=shard_rows, concurrency=concurrency, workers=workers, text_column=text_column,
        id_column=id_column, skip_invalid=skip_invalid, overwrite=overwrite, gpus_per_worker=gpus_per_worker,
    )
    input_type = check_input_type(input_type)
    started = time.monotonic()
    corpus = Corpus.open(Path(input), text_column=text_column, id_column=id_column)
    _check_not_inside(Path(output), corpus.path)
    _refuse_duplicate_ids(corpus)
    created = not Path(output).exists()
    out = _output_dir(Path(output))
    owned = not isinstance(spec, EmbeddingGeneratorManager)
    manager = spec if isinstance(spec, EmbeddingGeneratorManager) else EmbeddingGeneratorManager.from_subject_spec(spec)
    try:
        if engine == "ray" and manager.spec is None:
            raise InvalidInputError(
                "the ray engine builds the generator on every worker from its spec: pass the spec "
                "(a path, a mapping or a SubjectSpec), not a manager whose generators were registered by hand"
            )
        with _lock(out):
            if overwrite:
                _clear(out)
            fresh = Manifest.read(out) is None
            canonical = manager.resolve(name)
            try:
                job, record, manifest = _start(manager, canonical, corpus, out, shard_rows, input_type, skip_invalid,
                                               concurrency)
                done, damaged = _resumable(job)
                before = [r for r in (read_result(job.shard_path(i)) for i in sorted(done)) if r is not None]
                show = Progress(corpus.count_rows(), sum(r.rows + r.skipped for r in before), show=progress)
                try:
                    if engine == "ray":
                        from .ray_engine import run_ray

                        gpus = gpus_per_worker if gpus_per_worker is not None else _default_gpus(manager, canonical)
                        count = run_ray(job, done, show, address=ray_address, workers=workers,
                                        gpus_per_worker=gpus)
                    else:
                        count = run_local(job, manager, done, show)
                finally:
                    show.close()
            except BaseException:
                if fresh and not any(out.glob("part-*.parquet")):
                    _forget(out, created)  # a job that failed before any shard leaves nothing behind
                raise
            return _finish(job, record, manifest, count, done, damaged, engine, started)
    finally:
        if owned:
            manager.close()


def _check_arguments(**values: Any) -> None:
    """The Python API's arguments, checked as the CLI's parser checks its flags."""
    if values["engine"] not in ("local", "ray"):
        raise InvalidInputError(f"unknown engine {values['engine']!r}; use 'local' or 'ray'")
    for key in ("shard_rows", "concurrency", "workers"):
        value = values[key]
        if (value is not None or key != "workers") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidInputError(f"{key} must be a positive integer, got {value!r}")
    gpus = values["gpus_per_worker"]
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not 0 <= gpus < 1e6):
        raise InvalidInputError(f"gpus_per_worker must be a number >= 0, got {gpus!r}")
    for key in ("text_column", "id_column"):
        value = values[key]
        if (value is not None or key == "text_column") and (not isinstance(value, str) or not value):
            raise InvalidInputError(f"{key} must be a column name, got {value!r}")
    for key in ("skip_invalid", "overwrite"):
        if not isinstance(values[key], bool):
            raise InvalidInputError(f"{key} must be True or False, got {values[key]!r}")


def _check_not_inside(output: Path, source: Path) -> None:
    """An output in (or equal to) its own input would be read back as input on the next run."""
    out, inp = output.resolve(), source.resolve()
    if out == inp or (inp.is_dir() and inp in out.parents):
        raise BulkOutputError(
            f"{output}: the output is inside the input {source} (a rerun would read its own shards as input); "
            "give --output a directory outside the input"
        )


def _refuse_duplicate_ids(corpus: Corpus, shown: int = 5) -> None:
    """Ids name rows: two rows with one id make an output that no reader can key by id."""
    if corpus.id_column is None:
        return
    pc = require("pyarrow.compute", "bulk")
    counts = pc.value_counts(corpus.ids())
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        values = repeated.field("values").to_pylist()
        more = f" and {len(values) - shown} more" if len(values) > shown else ""
        listed = ", ".join(repr(v) for v in values[:shown] if v is not None) or "null"
        raise CorpusError(
            f"{corpus.path}: id column {corpus.id_column!r} has duplicate ids: {listed}{more}; ids must be unique"
        )


def _forget(out: Path, created: bool) -> None:
    """Remove what a failed first run wrote: its manifest, lock and temporary files (and the folder it made)."""
    for path in out.iterdir():
        if path.name in (MANIFEST, ".lock") or path.name.startswith((".part-", f".{MANIFEST}")):
            path.unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):
            out.rmdir()


def _resumable(job: Job) -> tuple[set[int], list[str]]:
    """Shards of this input already written whole; those that do not read back (truncated, damaged)
    are removed, to be embedded again, and named."""
    done, damaged = set(), []
    for index in _written(job.output, job.fingerprint):
        path = job.shard_path(index)
        if read_result(path) is None:
            damaged.append(path.name)
            path.unlink(missing_ok=True)
        else:
            done.add(index)
    return done, damaged


def _clear(out: Path) -> None:
    """``--overwrite``: remove what a bulk job writes (shards, manifest, temporary files); other files stay."""
    for path in out.iterdir():
        if path.name == MANIFEST or path.name.startswith(("part-", ".part-", f".{MANIFEST}")):
            path.unlink()


def _output_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise BulkOutputError(f"{out}: exists and is not a directory; give --output a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BulkOutputError(f"{out}: cannot create the output directory: {exc}") from None
    return out


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One job per output directory at a time (two would write the same shards)."""
    with open(out / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BulkOutputError(f"{out}: another bulk job is writing into this directory") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _written(out: Path, fingerprint: str) -> list[int]:
    return sorted(int(p.stem.rsplit("-", 1)[1]) for p in out.glob(f"part-{fingerprint[:8]}-*.parquet"))


def _start(
    manager: EmbeddingGeneratorManager,
    name: str,
    corpus: Corpus,
    out: Path,
    shard_rows: int,
    input_type: InputType | None,
    skip_invalid: bool,
    concurrency: int,
) -> tuple[Job, InputRecord, Manifest]:
    """Embed the probes, check them and the identity against an existing manifest, record the input."""
    generator = manager.get(name)
    probes = generator.embed(list(PROBES), input_type=input_type).vectors
    identity = space_identity(generator, input_type)
    manifest = Manifest.read(out)
    if manifest is None:
        if any(out.glob("part-*.parquet")):
            raise BulkOutputError(f"{out}: holds shards but no {MANIFEST}; pass --overwrite to start afresh")
        item = manager.model_item(name)
        manifest = Manifest(
            generator=name, model_item=redact_params(item.model_dump(mode="json")) if item else None,
            identity=identity, dims=int(probes.shape[1]), normalize=generator.normalize, input_type=input_type,
            probes=Probes(texts=list(PROBES), vectors=probes.tolist()),
        )
    else:
        check = check_space(
            generator, identity=manifest.identity, probes=manifest.probes_array(), probe_texts=manifest.probes.texts,
            input_type=manifest.input_type, where=str(out / MANIFEST),
        )
        if not check.ok or manifest.input_type != input_type:
            why = check.explain() if not check.ok else f"input_type {manifest.input_type!r} vs {input_type!r}"
            raise EmbeddingSpaceError(
                f"{out} holds vectors of generator {manifest.generator!r} in another embedding space than "
                f"{name!r} makes ({why}); one index must hold one space: use another --output, or --overwrite"
            )
    fingerprint = corpus.fingerprint()
    record = manifest.input(fingerprint)
    if record is None:
        for other in manifest.inputs:
            if other.source == str(corpus.path) and not other.complete:
                raise BulkOutputError(
                    f"{out}: {corpus.path} changed since the interrupted run that started this output; "
                    "pass --overwrite to start afresh"
                )
        record = InputRecord(source=str(corpus.path), fingerprint=fingerprint, format=corpus.format,  # type: ignore[arg-type]
                             text_column=corpus.text_column, id_column=corpus.id_column, shard_rows=shard_rows)
        manifest.inputs.append(record)
    elif record.shard_rows != shard_rows:
        raise BulkOutputError(
            f"{out}: this input was split into shards of {record.shard_rows} rows; resume with "
            f"--shard-rows {record.shard_rows}, or pass --overwrite"
        )
    _write_manifest(manifest, out)  # before any shard: a shard never exists without its manifest
    for stale in out.glob(f".part-{fingerprint[:8]}-*.tmp"):  # half-written by a killed run
        stale.unlink(missing_ok=True)
    step = max(generator.batch_size, 256)
    job = Job(name=name, corpus=corpus, output=out, fingerprint=fingerprint, shard_rows=shard_rows,
              dims=manifest.dims, input_type=input_type, skip_invalid=skip_invalid, step=step,
              concurrency=concurrency, spec=manager.spec.model_dump(mode="json") if manager.spec else None)
    return job, record, manifest


def _finish(
    job: Job, record: InputRecord, manifest: Manifest, count: int, done: set[int], damaged: list[str], engine: str,
    started: float,
) -> BulkReport:
    written = _written(job.output, job.fingerprint)
    read = [read_result(job.shard_path(i)) for i in written]
    results: list[ShardResult] = [r for r in read if r is not None]
    missing = sorted(set(range(count)) - {r.index for r in results})
    if missing:
        raise BulkOutputError(f"{job.output}: shards {missing[:10]} of this input were not written; run again")
    record.shards, record.rows = count, sum(r.rows for r in results)
    record.skipped, record.complete = sum(r.skipped for r in results), True
    _write_manifest(manifest, job.output)
    new = [r for r in results if r.index not in done]
    return BulkReport(
        output=job.output, manifest=job.output / MANIFEST, generator=job.name, engine=engine, rows=record.rows,
        embedded=sum(r.rows for r in new), shards=count, resumed_shards=len(done), skipped=record.skipped,
        skipped_ids=tuple(i for r in results for i in r.skipped_ids), seconds=time.monotonic() - started,
        damaged_shards=tuple(damaged),
    )


def _write_manifest(manifest: Manifest, out: Path) -> None:
    try:
        manifest.write(out)
    except OSError as exc:
        raise write_error(out, MANIFEST, exc) from None


def _default_gpus(manager: EmbeddingGeneratorManager, name: str) -> float:
    """One GPU per Ray worker for a local model on ``cuda``; none otherwise."""
    device: Any = getattr(manager.get(name).params, "device", None)
    return 1.0 if isinstance(device, str) and device.startswith("cuda") else 0.0
