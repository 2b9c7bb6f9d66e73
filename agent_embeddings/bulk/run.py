"""``embed_dataset``: bring an output to the current content of its input, in its one embedding space.

One path does every kind of run. The output's current snapshot (if any) is checked against the
generator's space; the job writes a new snapshot (:mod:`.store`) where each row of the input
either keeps its vector from the current snapshot (same id, same content hash: :mod:`.donor`)
or is embedded; other inputs' shards are hard-linked; then the new snapshot replaces the old
one atomically. A first build is the case with nothing to reuse; a rerun after a kill resumes
the unfinished snapshot; a rerun on an unchanged input does nothing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._deps import require
from ..errors import BulkOutputError, EmbeddingSpaceError, InvalidInputError
from ..progress import DEFAULT_LOG_EVERY_S, Progress
from ..redaction import redact_params
from ..space import PROBES, input_kind
from ..vectors import InputType, check_input_type
from .checks import check_arguments, check_not_inside, refuse_duplicate_ids, refuse_shared_ids
from .donor import Donor, content_hashes
from .job import DEFAULT_SHARD_ROWS, BulkReport, Job
from .local import run_local
from .manifest import MANIFEST, InputRecord, Manifest, Probes, SyncRecord
from .shard import ShardResult, read_result, shard_name, write_error
from .source import Corpus
from .store import Store
from .verify import check_output_space, embed_probes

if TYPE_CHECKING:
    import numpy as np

    from ..manager import EmbeddingGeneratorManager
    from ..space import InputKind, SpaceIdentity
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
    keep_columns: Sequence[str] = (),
    engine: Engine = "local",
    input_type: InputType | None = "document",
    shard_rows: int = DEFAULT_SHARD_ROWS,
    skip_invalid: bool = False,
    overwrite: bool = False,
    append: bool = False,
    concurrency: int = 1,
    progress: bool | None = None,
    log_every_s: float = DEFAULT_LOG_EVERY_S,
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    input_filesystem: Any = None,
) -> BulkReport:
    """Embed column ``text_column`` of ``input`` (Parquet, JSON Lines or CSV; a file or a directory)
    with generator ``name`` of ``spec`` into Parquet shards under ``output``, or bring ``output``
    up to date with ``input``.

    ``input`` is a local path, a URI pyarrow's filesystems resolve (``s3://bucket/corpus/``,
    ``gs://...``), or a path inside ``input_filesystem`` (any ``pyarrow.fs.FileSystem``).
    ``output`` is a path on a POSIX filesystem (on a cluster: one every node mounts), since the
    job switches its snapshot with a symlink rename (docs/bulk.md).

    * The first run builds the output. Run again after an interruption, it resumes.
    * Run again after the input changed (with ``id_column``), it **syncs**: rows whose id and
      content are unchanged keep their vectors (copied), new and changed rows are embedded,
      removed ids disappear; readers see the old snapshot until the new one replaces it.
    * An output in another embedding space is refused (:class:`EmbeddingSpaceError`): build the
      new space into another output and compare them (``bulk compare``). ``overwrite=True``
      builds afresh; ``append=True`` adds another input to the output.
    * ``progress``: a bar on a terminal (None), forced (True) or off (False); away from a terminal
      a log line every ``log_every_s`` seconds (``agent_embeddings.bulk`` logger: rows done of the
      input's total, rate, time left).

    >>> report = embed_dataset("specs/default.json", "hf-minilm", "corpus.parquet", "vectors/",
    ...                        text_column="text", id_column="id")     # doctest: +SKIP
    >>> report.action, report.rows, report.embedded                     # doctest: +SKIP
    ('build', 25000, 25000)
    """
    from ..manager import EmbeddingGeneratorManager

    keep = tuple(keep_columns)
    check_arguments(
        engine=engine, shard_rows=shard_rows, concurrency=concurrency, workers=workers, text_column=text_column,
        id_column=id_column, keep_columns=keep, skip_invalid=skip_invalid, overwrite=overwrite, append=append,
        gpus_per_worker=gpus_per_worker,
    )
    input_type = check_input_type(input_type)
    started = time.monotonic()
    corpus = Corpus.open(input if isinstance(input, str) else Path(input), text_column=text_column,
                         id_column=id_column, keep_columns=keep, filesystem=input_filesystem)
    out = _output_path(output)
    if corpus.filesystem is None:
        check_not_inside(out, Path(corpus.path))
    store = Store(out)
    if not overwrite:
        store.current()  # a file, or a folder that is no bulk output, is refused before any model loads
    ids = corpus.ids()
    refuse_duplicate_ids(corpus.source, corpus.id_column, ids)
    owned = not isinstance(spec, EmbeddingGeneratorManager)
    manager = spec if isinstance(spec, EmbeddingGeneratorManager) else EmbeddingGeneratorManager.from_subject_spec(spec)
    try:
        if engine == "ray" and manager.spec is None:
            raise InvalidInputError(
                "the ray engine builds the generator on every worker from its spec: pass the spec "
                "(a path, a mapping or a SubjectSpec), not a manager whose generators were registered by hand"
            )
        with store.lock():
            run = _Run(manager, manager.resolve(name), corpus, store, ids, input_type=input_type,
                       shard_rows=shard_rows, skip_invalid=skip_invalid, overwrite=overwrite, append=append,
                       concurrency=concurrency, started=started)
            return run.execute(engine, progress=progress, log_every_s=log_every_s, ray_address=ray_address,
                               workers=workers, gpus_per_worker=gpus_per_worker)
    finally:
        if owned:
            manager.close()


@dataclass
class _Plan:
    action: str  # build, sync, append, upgrade, overwrite, unchanged
    record: InputRecord  # the input's record in the new snapshot
    carried: list[InputRecord]  # other inputs' records, their shards hard-linked
    donor: Donor | None


class _Run:
    """One call of :func:`embed_dataset`, under the output's lock."""

    def __init__(
        self, manager: EmbeddingGeneratorManager, name: str, corpus: Corpus, store: Store, ids: Any, *,
        input_type: InputType | None, shard_rows: int, skip_invalid: bool, overwrite: bool, append: bool,
        concurrency: int, started: float,
    ) -> None:
        self.manager, self.name, self.corpus, self.store, self.ids = manager, name, corpus, store, ids
        self.generator = manager.get(name)
        self.input_type, self.shard_rows, self.skip_invalid = input_type, shard_rows, skip_invalid
        self.overwrite, self.append, self.concurrency, self.started = overwrite, append, concurrency, started
        self.source = corpus.source
        self.fingerprint = corpus.fingerprint()
        self.engine = "local"
        #: shards of the current snapshot that do not read back whole (embedded again, and named)
        self.damaged: list[str] = []
        #: when the shards' loop started and ended (the report's load / embed split)
        self.loop_started = self.loop_ended = 0.0

    # -- deciding ----------------------------------------------------------------------------
    def execute(self, engine: str, **options: Any) -> BulkReport:
        self.engine = engine
        probes, identity = embed_probes(self.generator)
        if self.store.is_legacy():  # an earlier version's plain directory becomes the first snapshot
            self.store.adopt_legacy()
        elif self.overwrite:
            self.store.clear_plain()  # a plain folder of what bulk writes (shards without a manifest) goes
        current_dir = None if self.overwrite else self.store.current()
        current = Manifest.read(current_dir) if current_dir is not None else None
        if current is not None and current_dir is not None:
            self._check_space(current, current_dir)
        plan = self._plan(current, current_dir)
        if plan.action == "unchanged":
            return self._report(plan, current_dir or self.store.output, [], 0, set(), [], current, identity)
        manifest = self._manifest(current, plan, probes, identity)
        snapshot = self._staging(manifest, current_dir)
        try:
            self._carry(plan.carried, current_dir, snapshot)
            job = self._job(plan, snapshot, identity, manifest.dims)
            done, damaged = _resumable(job)
            before = [r for r in (read_result(job.shard_path(i)) for i in sorted(done)) if r is not None]
            # The total is exact for every format: the ids were read (or counted) before the model loaded.
            show = Progress(len(self.ids), sum(r.rows + r.skipped for r in before), show=options["progress"],
                            every_s=options["log_every_s"])
            self.loop_started = time.monotonic()
            try:
                if engine == "ray":
                    from .ray_engine import run_ray

                    gpus = options["gpus_per_worker"]
                    count = run_ray(job, done, show, address=options["ray_address"], workers=options["workers"],
                                    gpus_per_worker=gpus if gpus is not None else _default_gpus(self.generator))
                else:
                    count = run_local(job, self.manager, done, show)
            finally:
                show.close()
                self.loop_ended = time.monotonic()
        except BaseException:
            if current is None and not any(snapshot.glob("part-*.parquet")):
                self.store.discard(snapshot)  # a first run that failed before its first shard leaves nothing
            raise
        results = _collect(job, count)
        return self._publish(plan, manifest, snapshot, job, results, done, damaged, current, identity)

    def _check_space(self, current: Manifest, where: Path) -> None:
        """One output, one space: a generator that does not embed into it is refused, saying why."""
        check = check_output_space(current, self.generator, str(where / MANIFEST))
        why = check.explain() if not check.ok else None
        if why is None and current.input_type != self.input_type:
            why = f"its rows were embedded as input_type {current.input_type!r}, this job asks for {self.input_type!r}"
        if why:
            raise EmbeddingSpaceError(
                f"{self.store.output} holds vectors of generator {current.generator!r} in another embedding space than "
                f"{self.name!r} makes ({why}); one output holds one space: build the new space into another "
                "--output (then `agent-embeddings bulk compare OLD NEW`), or pass --overwrite"
            )

    def _plan(self, current: Manifest | None, current_dir: Path | None) -> _Plan:
        corpus = self.corpus
        key = hashlib.sha256(self.source.encode()).hexdigest()[:8]
        record = InputRecord(
            source=self.source, key=key, fingerprint=self.fingerprint, format=corpus.format,  # type: ignore[arg-type]
            text_column=corpus.text_column, id_column=corpus.id_column, keep_columns=list(corpus.keep_columns),
            shard_rows=self.shard_rows,
        )
        if current is None or current_dir is None:
            return _Plan("overwrite" if self.overwrite else "build", record, [], None)
        previous = current.record(self.source)
        others = [r for r in current.inputs if r.source != self.source]
        if others:
            self._refuse_shared(others, current_dir)
        if previous is None:
            if others and not self.append:
                listed = ", ".join(r.source for r in others)
                raise BulkOutputError(
                    f"{self.store.output} holds the vectors of another input ({listed}); pass --append to add "
                    f"{self.source} to it, or give another --output"
                )
            return _Plan("append", record, others, None)
        same = (
            previous.fingerprint == self.fingerprint and previous.shard_rows == self.shard_rows
            and previous.keep_columns == list(corpus.keep_columns) and previous.id_column == corpus.id_column
            and previous.text_column == corpus.text_column
        )
        shards, self.damaged = _whole(sorted(current_dir.glob(f"part-{previous.key[:8]}-*.parquet")))
        if same and not current.legacy and not self.damaged:
            return _Plan("unchanged", previous, others, None)
        if previous.fingerprint != self.fingerprint and corpus.id_column is None:
            raise BulkOutputError(
                f"{self.source} changed since it was embedded into {self.store.output}; without --id-column its rows "
                "are known by their row numbers, which an edit shifts: pass --id-column to sync the output to the "
                "new content (unchanged rows keep their vectors), or --overwrite to embed it afresh"
            )
        if previous.id_column != corpus.id_column:
            raise BulkOutputError(
                f"{self.source} was embedded with --id-column {previous.id_column!r}, not {corpus.id_column!r}; "
                "pass --overwrite to embed it afresh with the new ids"
            )
        if current.legacy:
            # Version 1 stored no content hashes: they can be vouched for only while the input is
            # the very one those vectors came from (its fingerprint says so); otherwise all is embedded.
            trusted = self._hashes() if previous.fingerprint == self.fingerprint else None
            donor = Donor(shards, trusted_hashes=trusted) if trusted is not None else None
            return _Plan("upgrade", record, others, donor)
        return _Plan("sync", record, others, Donor(shards))

    def _refuse_shared(self, others: list[InputRecord], current_dir: Path) -> None:
        pa = require("pyarrow", "bulk")
        pq = require("pyarrow.parquet", "bulk")
        columns = [pq.read_table(str(p), columns=["id"]).column("id")
                   for r in others for p in sorted(current_dir.glob(f"part-{r.key[:8]}-*.parquet"))]
        chunks = [c for column in columns for c in column.chunks]
        if chunks:
            refuse_shared_ids(self.source, self.ids, pa.chunked_array(chunks).combine_chunks(),
                              str(self.store.output))

    def _hashes(self) -> Any:
        """``id`` and ``content_hash`` of every row of the input (to vouch for version-1 shards)."""
        pa = require("pyarrow", "bulk")
        prompt = self.generator.space().prompt_for(input_kind(self.input_type))
        parts = [pa.table({"id": s.ids, "content_hash": content_hashes(s.texts.to_pylist(), prompt)})
                 for s in self.corpus.shards(self.shard_rows)]
        return pa.concat_tables(parts)

    # -- writing -----------------------------------------------------------------------------
    def _manifest(
        self, current: Manifest | None, plan: _Plan, probes: dict[InputKind, np.ndarray], identity: SpaceIdentity
    ) -> Manifest:
        """The new snapshot's manifest: the current space (or the generator's, for a new output)."""
        item = self.manager.model_item(self.name)
        base = current if current is not None and not current.legacy else None
        stored = (base.probes if base is not None
                  else Probes(texts=list(PROBES), vectors={k: v.tolist() for k, v in probes.items()}))
        return Manifest(
            generator=self.name, model_item=redact_params(item.model_dump(mode="json")) if item else None,
            space_id=identity.space_id, identity=identity, dims=stored.width, normalize=identity.normalize,
            input_type=self.input_type, probes=stored, inputs=[*plan.carried, plan.record],
            syncs=list(current.syncs) if current is not None else [],
        )

    def _staging(self, manifest: Manifest, current_dir: Path | None) -> Path:
        """The unfinished snapshot of this very plan (resumed), or a new one."""
        pending = self.store.pending()
        if pending is not None:
            found = Manifest.read(pending) if (pending / MANIFEST).exists() else None
            base = current_dir.name if current_dir else None
            if found is not None and _same_plan(found, manifest) and found.base == base:
                return pending
        snapshot = self.store.new_snapshot()
        manifest.base = current_dir.name if current_dir else None
        _write_manifest(manifest, snapshot)  # before any shard: a shard never exists without its manifest
        return snapshot

    def _carry(self, carried: list[InputRecord], current_dir: Path | None, snapshot: Path) -> None:
        """Other inputs' shards, unchanged: hard links (no copy), or copies across filesystems."""
        if current_dir is None:
            return
        for record in carried:
            for path in current_dir.glob(f"part-{record.key[:8]}-*.parquet"):
                target = snapshot / path.name
                if not target.exists():
                    try:
                        os.link(path, target)
                    except OSError:
                        import shutil

                        shutil.copy2(path, target)

    def _job(self, plan: _Plan, snapshot: Path, identity: SpaceIdentity, dims: int) -> Job:
        for stale in snapshot.glob(f".part-{plan.record.key[:8]}-*.tmp"):  # half-written by a killed run
            stale.unlink(missing_ok=True)
        spec = self.manager.spec.model_dump(mode="json") if self.manager.spec else None
        return Job(
            name=self.name, corpus=self.corpus, output=snapshot, key=plan.record.key, shard_rows=self.shard_rows,
            dims=dims, input_type=self.input_type, skip_invalid=self.skip_invalid,
            step=max(self.generator.batch_size, 256), concurrency=self.concurrency, spec=spec,
            prompt=identity.prompt_for(input_kind(self.input_type)), donor=plan.donor,
        )

    def _publish(
        self, plan: _Plan, manifest: Manifest, snapshot: Path, job: Job, results: list[ShardResult],
        done: set[int], damaged: list[str], current: Manifest | None, identity: SpaceIdentity,
    ) -> BulkReport:
        record = plan.record
        record.shards, record.rows = len(results), sum(r.rows for r in results)
        record.skipped, record.complete = sum(r.skipped for r in results), True
        removed = _removed(plan.donor, self.ids)
        new = [r for r in results if r.index not in done]
        manifest.syncs.append(SyncRecord(
            at=datetime.now(timezone.utc).isoformat(timespec="seconds"), kind=plan.action,  # type: ignore[arg-type]
            source=self.source, fingerprint=self.fingerprint, added=sum(r.added for r in results),
            changed=sum(r.changed for r in results), unchanged=sum(r.reused for r in results), removed=removed,
            embedded=sum(r.unique for r in new), seconds=round(time.monotonic() - self.started, 3),
        ))
        manifest.base = None
        _write_manifest(manifest, snapshot)
        self.store.publish(snapshot)
        return self._report(plan, self.store.output, results, removed, done, damaged, manifest, identity)

    def _report(
        self, plan: _Plan, where: Path, results: list[ShardResult], removed: int, done: set[int], damaged: list[str],
        manifest: Manifest | None, identity: SpaceIdentity,
    ) -> BulkReport:
        record = plan.record
        unchanged = plan.action == "unchanged"
        new = [r for r in results if r.index not in done]
        now = time.monotonic()
        loop = (self.loop_started, self.loop_ended) if self.loop_started else (now, now)
        return BulkReport(
            output=self.store.output, manifest=self.store.output / MANIFEST, generator=self.name,
            engine="none" if unchanged else self.engine, rows=record.rows or 0, embedded=sum(r.unique for r in new),
            shards=record.shards or 0, resumed_shards=len(done), skipped=record.skipped,
            skipped_ids=tuple(i for r in results for i in r.skipped_ids), seconds=now - self.started,
            load_seconds=loop[0] - self.started, embed_seconds=loop[1] - loop[0],
            damaged_shards=tuple(self.damaged + damaged), action=plan.action, space_id=identity.space_id,
            added=sum(r.added for r in results), changed=sum(r.changed for r in results),
            unchanged=(record.rows or 0) if unchanged else sum(r.reused for r in results), removed=removed,
        )


def _output_path(output: str | os.PathLike[str]) -> Path:
    if "://" in str(output):
        raise BulkOutputError(
            f"{output}: the output must be a directory on a POSIX filesystem (a local disk, or on a cluster a "
            "shared one every node mounts: NFS, EFS, CephFS); a job switches its snapshot with a symlink rename, "
            "which object stores do not have. Write it there, then copy the published snapshot to the bucket "
            "(see docs/bulk.md)"
        )
    return Path(output)


def _same_plan(found: Manifest, wanted: Manifest) -> bool:
    """A pending snapshot resumes only the very job that started it."""
    strip = {"shards", "rows", "skipped", "complete"}
    return found.space_id == wanted.space_id and found.input_type == wanted.input_type and [
        r.model_dump(exclude=strip) for r in found.inputs] == [r.model_dump(exclude=strip) for r in wanted.inputs]


def _resumable(job: Job) -> tuple[set[int], list[str]]:
    """Shards of this input already written whole; those that do not read back (truncated, damaged)
    are removed, to be embedded again, and named."""
    done, damaged = set(), []
    for path in sorted(job.output.glob(f"part-{job.key[:8]}-*.parquet")):
        if read_result(path) is None:
            damaged.append(path.name)
            path.unlink(missing_ok=True)
        else:
            done.add(int(path.stem.rsplit("-", 1)[1]))
    return done, damaged


def _whole(shards: list[Path]) -> tuple[list[Path], list[str]]:
    """The shards that read back whole, and the names of those that do not (truncated, damaged)."""
    good = [p for p in shards if read_result(p) is not None]
    return good, [p.name for p in shards if p not in good]


def _collect(job: Job, count: int) -> list[ShardResult]:
    results = []
    for index in range(count):
        result = read_result(job.shard_path(index))
        if result is None:
            raise BulkOutputError(f"{job.output}: shard {shard_name(job.key, index)} was not written; run again")
        results.append(result)
    return results


def _removed(donor: Donor | None, ids: Any) -> int:
    """Ids of the previous snapshot that the input no longer has."""
    if donor is None:
        return 0
    pc = require("pyarrow.compute", "bulk")
    old = donor.known_ids()
    if not len(old) or old.type != ids.type:
        return len(old)
    kept = pc.sum(pc.is_in(old, value_set=ids)).as_py() or 0
    return len(old) - int(kept)


def _write_manifest(manifest: Manifest, directory: Path) -> None:
    try:
        manifest.write(directory)
    except OSError as exc:
        raise write_error(directory, MANIFEST, exc) from None


def _default_gpus(generator: Any) -> float:
    """One GPU per Ray worker for a local model on ``cuda``; none otherwise."""
    device: Any = getattr(generator.params, "device", None)
    return 1.0 if isinstance(device, str) and device.startswith("cuda") else 0.0
