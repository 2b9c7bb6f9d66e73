"""``_embedding.json``: what a bulk output's vectors are, which inputs they hold, how they got there.

The manifest is small, written atomically (a temporary file, then a rename) and validated as a
whole on every read: a hand-edited field is refused naming the field, never half-used. It holds
the generator's ModelItem (secrets redacted), the space's identity and id, probe vectors of each
input type (see :mod:`agent_embeddings.space`), one record per input and one per sync.

A manifest of version 1 (written before spaces had identities and rows content hashes) is read
as a :class:`Manifest` with ``legacy=True``: its identity holds what version 1 recorded, its
probes the one input type it embedded, and the next ``bulk`` run upgrades the output.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    model_validator,
)

from ..errors import BulkOutputError
from ..space import PROBES, InputKind, SpaceIdentity
from ..specs import format_validation_error
from ..version import __version__

__all__ = ["MANIFEST", "InputRecord", "Manifest", "Probes", "SyncRecord", "read_manifest"]

# The manifest's name in a bulk output directory: a leading "_" (as Hive's _metadata) makes every
# Parquet reader skip it, so pandas, pyarrow or DuckDB read the directory as plain Parquet.
MANIFEST = "_embedding.json"


def _check_matrix(vectors: list[list[float]], what: str) -> int:
    widths = {len(v) for v in vectors}
    if len(widths) != 1 or 0 in widths:
        raise ValueError(f"{what} must all have one width, got widths {sorted(widths)}")
    if not np.isfinite(np.asarray(vectors, dtype=np.float64)).all():
        raise ValueError(f"{what} hold a NaN or an infinite value")
    return widths.pop()


class Probes(BaseModel):
    """The fixed sentences (:data:`~agent_embeddings.space.PROBES`) and their vectors for each input
    type, from when the output's space was first embedded."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str]
    vectors: dict[InputKind, list[list[float]]]

    @model_validator(mode="after")
    def _whole(self) -> Probes:
        if self.texts != list(PROBES):
            raise ValueError(f"texts must be the {len(PROBES)} fixed probe sentences, as bulk wrote them")
        if not self.vectors:
            raise ValueError("vectors holds no input type")
        widths = set()
        for kind, matrix in self.vectors.items():
            if len(matrix) != len(self.texts):
                raise ValueError(f"vectors.{kind} has {len(matrix)} vectors for {len(self.texts)} probe sentences")
            widths.add(_check_matrix(matrix, f"vectors.{kind}"))
        if len(widths) != 1:
            raise ValueError(f"the input types' probe vectors have different widths {sorted(widths)}")
        return self

    @property
    def width(self) -> int:
        return len(next(iter(self.vectors.values()))[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {kind: np.asarray(matrix, dtype=np.float32) for kind, matrix in self.vectors.items()}


class InputRecord(BaseModel):
    """One input embedded into the output: where it came from, which snapshot of it, how it was split."""

    model_config = ConfigDict(extra="allow")

    source: str = Field(min_length=1, description="The input path as given.")
    key: str = Field(default="", description="Its shards' name prefix: part-<key>-<index>.parquet.")
    fingerprint: str = Field(min_length=8, description="The content of the input the vectors are of.")
    format: Literal["parquet", "json", "csv"]
    text_column: str = Field(min_length=1)
    id_column: str | None = None
    keep_columns: list[str] = Field(default_factory=list, description="Input columns copied into the shards.")
    shard_rows: PositiveInt
    shards: NonNegativeInt | None = Field(default=None, description="Shards written (set when complete).")
    rows: NonNegativeInt | None = Field(default=None, description="Rows written (set when complete).")
    skipped: NonNegativeInt = 0
    complete: bool = False


class SyncRecord(BaseModel):
    """One run that changed the output: a build, a sync of a changed input, an upgrade."""

    model_config = ConfigDict(extra="allow")

    at: str
    kind: Literal["build", "sync", "append", "upgrade", "overwrite"]
    source: str
    fingerprint: str
    added: NonNegativeInt = 0
    changed: NonNegativeInt = 0
    unchanged: NonNegativeInt = 0
    removed: NonNegativeInt = 0
    embedded: NonNegativeInt = 0
    seconds: NonNegativeFloat = 0.0


class Manifest(BaseModel):
    """The whole ``_embedding.json`` (version 2)."""

    model_config = ConfigDict(extra="allow")

    format: Literal["agent-embeddings/bulk"] = "agent-embeddings/bulk"
    version: Literal[2] = 2
    generator: str = Field(min_length=1)
    model_item: dict[str, Any] | None = Field(default=None, description="The spec item, secrets redacted.")
    space_id: str = Field(min_length=1)
    identity: SpaceIdentity
    dims: PositiveInt
    normalize: bool
    input_type: Literal["query", "document"] | None = None
    dtype: Literal["float32"] = "float32"
    probes: Probes
    inputs: list[InputRecord] = Field(default_factory=list)
    syncs: list[SyncRecord] = Field(default_factory=list)
    rows: NonNegativeInt = 0
    written_by: str = f"agent-embeddings {__version__}"
    updated: str = ""
    base: str | None = Field(
        default=None, description="While the snapshot is being written: the snapshot it was started from."
    )
    #: read from a version-1 manifest: the identity holds only what version 1 recorded
    legacy: bool = Field(default=False, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.probes.width != self.dims:
            raise ValueError(f"dims is {self.dims} but the probe vectors have {self.probes.width} dimensions")
        if not self.legacy and self.space_id != self.identity.space_id:
            raise ValueError(f"space_id {self.space_id!r} is not the id of the identity ({self.identity.space_id!r})")
        return self

    @classmethod
    def read(cls, directory: Path) -> Manifest | None:
        """The manifest in ``directory``, None when there is none; a clear error when it is not one."""
        path = directory / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise BulkOutputError(f"{path}: cannot read: {exc}") from None
        try:
            data = json.loads(text)
            if isinstance(data, dict) and data.get("version") == 1:
                return _from_version_1(data)
            return cls.model_validate(data)
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                raise BulkOutputError(format_validation_error(exc, where=f"{path}: not a valid bulk manifest")) from None
            raise BulkOutputError(f"{path}: not a valid bulk manifest: {exc}") from None

    def write(self, directory: Path) -> None:
        """Write atomically: readers see the old manifest or the new one, never half of one."""
        self.updated = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.rows = sum(i.rows or 0 for i in self.inputs if i.complete)
        tmp = directory / f".{MANIFEST}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, directory / MANIFEST)
        finally:
            tmp.unlink(missing_ok=True)

    def record(self, source: str) -> InputRecord | None:
        """The record of the input at ``source`` (a path as given)."""
        return next((i for i in self.inputs if i.source == source), None)


# -- version 1 ---------------------------------------------------------------------------------
class _ProbesV1(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str]
    vectors: list[list[float]]


class _ManifestV1(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: Literal[1]
    generator: str = Field(min_length=1)
    model_item: dict[str, Any] | None = None
    identity: dict[str, Any]
    dims: PositiveInt
    normalize: bool
    input_type: Literal["query", "document"] | None = None
    probes: _ProbesV1
    inputs: list[InputRecord] = Field(default_factory=list)


def _from_version_1(data: dict[str, Any]) -> Manifest:
    """What a version-1 manifest says, as version 2: its identity holds the fields version 1 kept
    (model, width, normalization, backend, prompt), its probes the one input type it embedded."""
    old = _ManifestV1.model_validate(data)
    kind: InputKind = "none" if old.input_type is None else old.input_type
    ident = old.identity
    backend = ident.get("backend")
    prompt = ident.get("input") or None
    identity = SpaceIdentity(
        model=ident.get("model"), revision=ident.get("revision"),
        precision=None if backend is None else ("int8" if backend == "onnx-int8" else "fp32"),
        prompt=ident.get("prompt") if kind == "none" else None,
        query_prompt=prompt if kind == "query" else None, document_prompt=prompt if kind == "document" else None,
        normalize=bool(ident.get("normalize", old.normalize)), dims=ident.get("dims") or old.dims,
        dimensions=ident.get("dimensions"), max_seq_length=ident.get("max_seq_length"),
    )
    for record in old.inputs:
        record.key = record.key or record.fingerprint[:8]
    return Manifest(
        generator=old.generator, model_item=old.model_item, space_id=identity.space_id, identity=identity,
        dims=old.dims, normalize=old.normalize, input_type=old.input_type,
        probes=Probes(texts=old.probes.texts, vectors={kind: old.probes.vectors}), inputs=old.inputs, legacy=True,
    )


def read_manifest(path: str | os.PathLike[str]) -> tuple[Manifest, Path]:
    """The manifest of an output directory (or the file itself) and its path; a clear error otherwise."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    if not path.is_dir() and path.name != MANIFEST:
        raise BulkOutputError(f"{path}: not a bulk output (give its directory, or its {MANIFEST})")
    manifest = Manifest.read(directory)
    if manifest is None:
        raise BulkOutputError(
            f"{directory / MANIFEST}: no bulk manifest here (bulk writes {MANIFEST} into its output directory)"
        )
    return manifest, directory / MANIFEST



def describe_output(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``bulk info`` prints: the space, the rows, the inputs and syncs, the snapshot and its size."""
    manifest, where = read_manifest(path)
    directory = where.parent
    shards = sorted(directory.glob("part-*.parquet"))
    return {
        "output": str(path),
        "snapshot": directory.resolve().name,
        "space_id": manifest.space_id,
        "identity": manifest.identity.model_dump(),
        "generator": manifest.generator,
        "input_type": manifest.input_type,
        "dims": manifest.dims,
        "rows": manifest.rows,
        "shards": len(shards),
        "bytes": sum(p.stat().st_size for p in shards),
        "inputs": [
            {"source": r.source, "rows": r.rows, "shards": r.shards, "fingerprint": r.fingerprint,
             "id_column": r.id_column, "keep_columns": r.keep_columns, "complete": r.complete}
            for r in manifest.inputs
        ],
        "syncs": [s.model_dump() for s in manifest.syncs],
        "updated": manifest.updated,
        "legacy": manifest.legacy,
    }
