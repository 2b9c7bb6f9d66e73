"""``embed_dataset``: check the output against the generator, then let an engine fill it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import BulkOutputError, EmbeddingSpaceError, InvalidInputError
from ..redaction import redact_params
from ..space import PROBES, check_space, space_identity
from ..vectors import InputType, check_input_type
from .job import DEFAULT_SHARD_ROWS, BulkReport, Job, Progress
from .local import run_local
from .manifest import MANIFEST, InputRecord, Manifest, Probes
from .shard import ShardResult, read_result
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

    if engine not in ("local", "ray"):
        raise InvalidInputError(f"unknown engine {engine!r}; use 'local' or 'ray'")
    if not isinstance(shard_rows, int) or shard_rows < 1:
        raise InvalidInputError(f"shard_rows must be a positive integer, got {shard_rows!r}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidInputError(f"concurrency must be a positive integer, got {concurrency!r}")
    input_type = check_input_type(input_type)
    started = time.monotonic()
    corpus = Corpus.open(Path(input), text_column=text_column, id_column=id_column)
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
            canonical = manager.resolve(name)
            job, record, manifest = _start(manager, canonical, corpus, out, shard_rows, input_type, skip_invalid,
                                           concurrency)
            before = [read_result(job.shard_path(i)) for i in _written(out, job.fingerprint)]
            done = {r.index for r in before}
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
            return _finish(job, record, manifest, count, done, engine, started)
    finally:
        if owned:
            manager.close()


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
        record = InputRecord(source=str(corpus.path), fingerprint=fingerprint, format=corpus.format,
                             text_column=corpus.text_column, id_column=corpus.id_column, shard_rows=shard_rows)
        manifest.inputs.append(record)
    elif record.shard_rows != shard_rows:
        raise BulkOutputError(
            f"{out}: this input was split into shards of {record.shard_rows} rows; resume with "
            f"--shard-rows {record.shard_rows}, or pass --overwrite"
        )
    manifest.write(out)  # before any shard: a shard never exists without its manifest
    for stale in out.glob(f".part-{fingerprint[:8]}-*.tmp"):  # half-written by a killed run
        stale.unlink(missing_ok=True)
    step = max(generator.batch_size, 256)
    job = Job(name=name, corpus=corpus, output=out, fingerprint=fingerprint, shard_rows=shard_rows,
              dims=manifest.dims, input_type=input_type, skip_invalid=skip_invalid, step=step,
              concurrency=concurrency, spec=manager.spec.model_dump(mode="json") if manager.spec else None)
    return job, record, manifest


def _finish(
    job: Job, record: InputRecord, manifest: Manifest, count: int, done: set[int], engine: str, started: float
) -> BulkReport:
    written = _written(job.output, job.fingerprint)
    results: list[ShardResult] = [read_result(job.shard_path(i)) for i in written]
    missing = sorted(set(range(count)) - set(written))
    if missing:
        raise BulkOutputError(f"{job.output}: shards {missing[:10]} of this input were not written; run again")
    record.shards, record.rows = count, sum(r.rows for r in results)
    record.skipped, record.complete = sum(r.skipped for r in results), True
    manifest.write(job.output)
    new = [r for r in results if r.index not in done]
    return BulkReport(
        output=job.output, manifest=job.output / MANIFEST, generator=job.name, engine=engine, rows=record.rows,
        embedded=sum(r.rows for r in new), shards=count, resumed_shards=len(done), skipped=record.skipped,
        skipped_ids=tuple(i for r in results for i in r.skipped_ids), seconds=time.monotonic() - started,
    )


def _default_gpus(manager: EmbeddingGeneratorManager, name: str) -> float:
    """One GPU per Ray worker for a local model on ``cuda``; none otherwise."""
    device: Any = getattr(manager.get(name).params, "device", None)
    return 1.0 if isinstance(device, str) and device.startswith("cuda") else 0.0
