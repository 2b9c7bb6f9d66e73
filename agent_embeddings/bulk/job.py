"""A bulk job's plan (what every engine needs to embed a shard), its report and its progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..progress import Progress
from ..vectors import InputType
from .donor import Donor
from .shard import ShardResult, embed_shard, shard_name, write_shard
from .source import Corpus, Shard

if TYPE_CHECKING:
    from ..manager import EmbeddingGeneratorManager

__all__ = ["DEFAULT_SHARD_ROWS", "BulkReport", "Job", "Progress", "process_shard"]

# Big enough that a shard's Parquet file is a few MB of vectors, small enough that a killed
# job loses at most a minute or so of CPU work with a small model.
DEFAULT_SHARD_ROWS = 10_000


@dataclass
class Job:
    """Everything needed to embed and write one shard; plain data, so Ray can ship it to workers."""

    name: str
    corpus: Corpus
    output: Path  # the snapshot being written
    key: str  # the input's shard-name prefix
    shard_rows: int
    dims: int
    input_type: InputType | None
    skip_invalid: bool
    step: int
    concurrency: int = 1
    spec: dict[str, Any] | None = field(default=None, repr=False)  # the subject spec, for Ray workers
    #: the space's prompt for the job's input type: part of each row's content hash
    prompt: str | None = None
    #: the previous snapshot's rows of this input (a sync), or None (a build)
    donor: Donor | None = field(default=None, repr=False)

    def shard_path(self, index: int) -> Path:
        return self.output / shard_name(self.key, index)


def process_shard(
    job: Job, manager: EmbeddingGeneratorManager, shard: Shard, progress: Callable[[int], None] | None = None
) -> ShardResult:
    """Embed ``shard`` with the job's generator and write it; the same code on every engine."""

    def embed(texts: list[str]) -> Any:
        return manager.encode(job.name, texts, input_type=job.input_type)

    table, result = embed_shard(
        shard, embed, text_column=job.corpus.text_column, id_column=job.corpus.id_column,
        skip_invalid=job.skip_invalid, dims=job.dims, step=job.step, concurrency=job.concurrency, progress=progress,
        prompt=job.prompt, donor=job.donor,
    )
    write_shard(table, result, job.output, job.shard_path(shard.index).name)
    return result


@dataclass(frozen=True)
class BulkReport:
    """What a bulk job did, and how long it took.

    ``action`` is ``build`` (a new output), ``sync`` (a changed input brought up to date),
    ``append`` (another input added), ``upgrade`` (an output of an earlier version given content
    hashes), ``overwrite`` or ``unchanged`` (nothing to do). ``rows`` counts the rows of this input
    now in the output; ``embedded`` the texts this run sent to the model; ``added`` / ``changed``
    / ``unchanged`` / ``removed`` compare the input with the snapshot before the run. ``seconds``
    is the whole run: ``load_seconds`` before the first shard, ``embed_seconds`` for the shards,
    the rest publishing the snapshot; ``rows_per_s`` is the rate over ``embed_seconds``.
    """

    output: Path
    manifest: Path
    generator: str
    engine: str
    rows: int
    embedded: int
    shards: int
    resumed_shards: int
    skipped: int
    skipped_ids: tuple[Any, ...]
    seconds: float
    #: shards of an earlier run that did not read back whole (truncated, damaged): embedded again
    damaged_shards: tuple[str, ...] = ()
    action: str = "build"
    space_id: str = ""
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    #: of ``seconds``: before the first shard (reading the input's ids, loading the model, its probes)
    load_seconds: float = 0.0
    #: of ``seconds``: embedding and writing the shards (on Ray, starting the actors too)
    embed_seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        """The embedding rate: texts embedded per second of ``embed_seconds`` (model loading left out)."""
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def summary(self) -> str:
        resumed = f", {self.resumed_shards} resumed" if self.resumed_shards else ""
        if self.damaged_shards:
            resumed += f", {len(self.damaged_shards)} damaged and embedded again ({', '.join(self.damaged_shards)})"
        skipped = f"; skipped {self.skipped} invalid rows" if self.skipped else ""
        shards = f"{self.shards} shard" + ("" if self.shards == 1 else "s")
        delta = ""
        if self.action in ("sync", "upgrade", "unchanged"):
            delta = (f" ({self.added} added, {self.changed} changed, {self.unchanged} unchanged, "
                     f"{self.removed} removed)")
        return (
            f"{self.action}: {self.rows} rows{delta} in {shards}{resumed} -> {self.output} "
            f"({self.embedded} embedded in {self.embed_seconds:.1f}s, {self.rows_per_s:.0f} rows/s; "
            f"{self.load_seconds:.1f}s to start: input scan, model load){skipped}"
        )
