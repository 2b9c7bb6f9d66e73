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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BulkOutputError
from ..space import MANIFEST
from ..version import __version__

__all__ = ["MANIFEST", "InputRecord", "Manifest", "Probes"]



class Probes(BaseModel):
    """Fixed sentences and their vectors when the output was started."""

    texts: list[str]
    vectors: list[list[float]]


class InputRecord(BaseModel):
    """One input embedded into the output: where it came from and how it was split."""

    model_config = ConfigDict(extra="allow")

    source: str
    fingerprint: str
    format: str
    text_column: str
    id_column: str | None = None
    shard_rows: int
    shards: int | None = Field(default=None, description="Shards written (set when complete).")
    rows: int | None = Field(default=None, description="Rows written (set when complete).")
    skipped: int = 0
    complete: bool = False


class Manifest(BaseModel):
    """The whole ``_embedding.json``."""

    model_config = ConfigDict(extra="allow")

    format: Literal["agent-embeddings/bulk"] = "agent-embeddings/bulk"
    version: Literal[1] = 1
    generator: str
    model_item: dict[str, Any] | None = Field(default=None, description="The spec item, secrets redacted.")
    identity: dict[str, Any]
    dims: int
    normalize: bool
    input_type: Literal["query", "document"] | None = None
    dtype: Literal["float32"] = "float32"
    probes: Probes
    inputs: list[InputRecord] = Field(default_factory=list)
    rows: int = 0
    written_by: str = f"agent-embeddings {__version__}"
    updated: str = ""

    @classmethod
    def read(cls, directory: Path) -> Manifest | None:
        """The manifest in ``directory``, None when there is none; a clear error when it is not one."""
        path = directory / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BulkOutputError(f"{path}: cannot read: {exc}") from None
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top)"
            raise BulkOutputError(f"{path}: not a bulk manifest ({where}: {first['msg']})") from None

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
