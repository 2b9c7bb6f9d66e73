"""``_embedding.json``: what an output directory's vectors are, and which inputs they hold.

The manifest is small and written atomically (a temporary file, then a rename). It holds the
generator's ModelItem (secrets redacted), its space identity and probe vectors (see
:mod:`agent_embeddings.space`), and one record per input embedded into the directory.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError, model_validator

from ..errors import BulkOutputError
from ..space import PROBES
from ..specs import format_validation_error
from ..version import __version__

__all__ = ["MANIFEST", "InputRecord", "Manifest", "Probes", "read_manifest"]

# The manifest's name in a bulk output directory: a leading "_" (as Hive's _metadata) makes every
# Parquet reader skip it, so pandas, pyarrow or DuckDB read the directory as plain Parquet.
MANIFEST = "_embedding.json"


class Probes(BaseModel):
    """Fixed sentences and their vectors when the output was started: the same sentences as
    :data:`~agent_embeddings.space.PROBES`, one finite vector each."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str]
    vectors: list[list[float]]

    @model_validator(mode="after")
    def _whole(self) -> Probes:
        if self.texts != list(PROBES):
            raise ValueError(f"texts must be the {len(PROBES)} fixed probe sentences, as bulk wrote them")
        if len(self.vectors) != len(self.texts):
            raise ValueError(f"{len(self.vectors)} vectors for {len(self.texts)} probe sentences")
        widths = {len(v) for v in self.vectors}
        if len(widths) != 1 or 0 in widths:
            raise ValueError(f"vectors must all have one width, got widths {sorted(widths)}")
        if not np.isfinite(np.asarray(self.vectors, dtype=np.float64)).all():
            raise ValueError("vectors hold a NaN or an infinite value")
        return self


class InputRecord(BaseModel):
    """One input embedded into the output: where it came from and how it was split."""

    model_config = ConfigDict(extra="allow")

    source: str = Field(min_length=1)
    fingerprint: str = Field(min_length=8)
    format: Literal["parquet", "json", "csv"]
    text_column: str = Field(min_length=1)
    id_column: str | None = None
    shard_rows: PositiveInt
    shards: NonNegativeInt | None = Field(default=None, description="Shards written (set when complete).")
    rows: NonNegativeInt | None = Field(default=None, description="Rows written (set when complete).")
    skipped: NonNegativeInt = 0
    complete: bool = False


class Manifest(BaseModel):
    """The whole ``_embedding.json``, validated as a whole on every read: a hand-edited field is
    refused naming the field, never half-used."""

    model_config = ConfigDict(extra="allow")

    format: Literal["agent-embeddings/bulk"] = "agent-embeddings/bulk"
    version: Literal[1] = 1
    generator: str = Field(min_length=1)
    model_item: dict[str, Any] | None = Field(default=None, description="The spec item, secrets redacted.")
    identity: dict[str, Any]
    dims: PositiveInt
    normalize: bool
    input_type: Literal["query", "document"] | None = None
    dtype: Literal["float32"] = "float32"
    probes: Probes
    inputs: list[InputRecord] = Field(default_factory=list)
    rows: int = 0
    written_by: str = f"agent-embeddings {__version__}"
    updated: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        width = len(self.probes.vectors[0])
        if width != self.dims:
            raise ValueError(f"dims is {self.dims} but the probe vectors have {width} dimensions")
        return self

    @classmethod
    def read(cls, directory: Path) -> Manifest | None:
        """The manifest in ``directory``, None when there is none; a clear error when it is not one."""
        path = directory / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise BulkOutputError(f"{path}: cannot read: {exc}") from None
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise BulkOutputError(format_validation_error(exc, where=f"{path}: not a valid bulk manifest")) from None

    def write(self, directory: Path) -> None:
        """Write atomically: readers see the old manifest or the new one, never half of one."""
        self.updated = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.rows = sum(i.rows or 0 for i in self.inputs if i.complete)
        tmp = directory / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, directory / MANIFEST)

    def probes_array(self) -> np.ndarray:
        return np.asarray(self.probes.vectors, dtype=np.float32)

    def input(self, fingerprint: str) -> InputRecord | None:
        return next((i for i in self.inputs if i.fingerprint == fingerprint), None)


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
