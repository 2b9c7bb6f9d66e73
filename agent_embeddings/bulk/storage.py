"""Where an input lives: a URI that pyarrow's filesystems resolve, or a path in a given filesystem.

The corpus (:mod:`.source`) lists and opens its files through the ``pyarrow.fs.FileSystem``
found here, the same calls for ``s3://``, ``gs://``, ``hdfs://`` and ``file://``. Outputs are
never here: they need a POSIX filesystem (:mod:`.store`).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import PurePath, PurePosixPath
from typing import Any

from .._deps import require
from ..errors import CorpusError

__all__ = ["from_uri", "list_files"]

def _pa() -> Any:
    return require("pyarrow", "bulk", who="agent-embeddings bulk")


def from_uri(uri: str) -> tuple[Any, str]:
    """The filesystem and the path in it that ``uri`` names (``s3://bucket/prefix`` -> S3, ``bucket/prefix``)."""
    fs = require("pyarrow.fs", "bulk", who="agent-embeddings bulk")
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
    except (OSError, _pa().ArrowException) as exc:
        raise CorpusError.from_library(f"{uri}: cannot open this input", exc) from None
    return filesystem, path


def list_files(filesystem: Any, path: str, uri: str, suffixes: Collection[str]) -> tuple[PurePath, list[PurePath]]:
    """The input's files in ``filesystem``: ``path`` itself, or the files under it with one of ``suffixes`` (hidden ones
    and those under ``_``/``.`` folders left out, as Parquet readers do), sorted."""
    fs = require("pyarrow.fs", "bulk", who="agent-embeddings bulk")
    try:
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            raise CorpusError(f"{uri}: no such file or directory")
        root = PurePosixPath(info.path)
        if info.type != fs.FileType.Directory:
            return root, [root]
        found = filesystem.get_file_info(fs.FileSelector(info.path, recursive=True))
    except (OSError, _pa().ArrowException) as exc:
        raise CorpusError.from_library(f"{uri}: cannot list this input", exc) from None
    files: list[PurePath] = sorted(
        PurePosixPath(f.path) for f in found
        if f.type == fs.FileType.File and PurePosixPath(f.path).suffix.lower() in suffixes
        and not any(part.startswith((".", "_")) for part in PurePosixPath(f.path).relative_to(root).parts)
    )
    if not files:
        raise CorpusError(f"{uri}: no {', '.join(sorted(suffixes))} files in this directory")
    return root, files
