"""Where a bulk output lives: snapshots in a hidden folder, and the output path a link to the current one.

::

    vectors -> .vectors.bulk/snap-000003          what readers open (pyarrow, pandas, DuckDB, LanceDB)
    .vectors.bulk/lock                            one job at a time
    .vectors.bulk/snap-000002/                    the previous snapshot, kept for a rollback
    .vectors.bulk/snap-000003/                    current: part-*.parquet and _embedding.json
    .vectors.bulk/snap-000004/                    being built or synced (resumable), not visible

A job writes a new snapshot beside the current one and, once it is whole, replaces the link
with ``rename(2)``, which is atomic: a reader sees the old snapshot or the new one, never a
mix, and a job killed at any point leaves the current snapshot as it was. Unchanged shards are
hard links into the new snapshot (no copy). This needs a POSIX filesystem (a local disk, NFS,
a shared volume); see docs/bulk.md for object stores.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import BulkOutputError
from .manifest import MANIFEST

__all__ = ["Store"]

_SNAPSHOT = re.compile(r"^snap-(\d{6})$")
#: snapshots kept besides the current one (the previous one, for a rollback)
KEEP_PREVIOUS = 1


class Store:
    """The snapshots of the output at ``output`` (a path that is, or will be, a link to one of them).

    >>> store = Store(Path("vectors"))          # doctest: +SKIP
    >>> store.current()                          # doctest: +SKIP
    PosixPath('.vectors.bulk/snap-000003')
    """

    def __init__(self, output: Path) -> None:
        if not output.name or output.name in (".", ".."):
            raise BulkOutputError(f"{output}: give --output a directory name, e.g. vectors/")
        self.output = output
        self.root = output.parent / f".{output.name}.bulk"

    # -- what is there -----------------------------------------------------------------------
    def current(self) -> Path | None:
        """The snapshot readers see now; None before the first job completes. A plain directory
        holding a manifest is an output of an earlier version (see :meth:`adopt_legacy`)."""
        out = self.output
        if out.is_symlink():
            target = out.resolve()
            if target.parent != self.root.resolve():
                raise BulkOutputError(
                    f"{out}: is a link to {target}, not to a snapshot of this output; give the real path as --output"
                )
            if not target.is_dir():
                raise BulkOutputError(f"{out}: links to {target}, which is gone; pass --overwrite to build afresh")
            return target
        if not out.exists():
            return None
        if not out.is_dir():
            raise BulkOutputError(f"{out}: exists and is not a directory; give --output a directory")
        if (out / MANIFEST).exists():
            return out
        if any(out.glob("part-*.parquet")):
            raise BulkOutputError(f"{out}: holds shards but no {MANIFEST}; pass --overwrite to start afresh")
        if any(out.iterdir()):
            raise BulkOutputError(f"{out}: is a directory with other files, not a bulk output; give a new path")
        return None

    def is_legacy(self) -> bool:
        """An output written before snapshots: a plain directory with its shards and manifest."""
        return self.output.is_dir() and not self.output.is_symlink() and (self.output / MANIFEST).exists()

    def snapshots(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if _SNAPSHOT.match(p.name) and p.is_dir())

    def pending(self) -> Path | None:
        """A snapshot newer than the current one: a job that did not finish (it may be resumed)."""
        current = self.current()
        newer = [p for p in self.snapshots() if current is None or _number(p) > _number(current)]
        return newer[-1] if newer else None

    # -- changing it -------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One job per output at a time (two would write the same snapshot)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BulkOutputError(f"{self.output}: cannot create {self.root}: {exc.strerror}") from None
        with open(self.root / "lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BulkOutputError(f"{self.output}: another bulk job is writing this output") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def new_snapshot(self) -> Path:
        """A fresh, empty snapshot after every existing one (a pending one is removed first)."""
        pending = self.pending()
        if pending is not None:
            shutil.rmtree(pending)
        numbers = [_number(p) for p in self.snapshots()]
        if self.is_legacy():
            numbers.append(0)
        path = self.root / f"snap-{max(numbers, default=0) + 1:06d}"
        path.mkdir()
        return path

    def clear_plain(self) -> None:
        """For ``--overwrite``: a plain directory holding only what bulk writes (shards, temporary
        files, a lock) is removed; one holding anything else is refused, never deleted."""
        out = self.output
        if out.is_symlink() or not out.is_dir():
            if out.exists() and not out.is_symlink():
                raise BulkOutputError(f"{out}: exists and is not a directory; give --output a directory")
            return
        ours = [p for p in out.iterdir() if p.name.startswith(("part-", ".part-", ".lock", f".{MANIFEST}"))]
        others = [p.name for p in out.iterdir() if p not in ours]
        if others:
            raise BulkOutputError(f"{out}: is a directory with other files ({', '.join(sorted(others)[:3])}), not a "
                                  "bulk output; give a new path")
        for path in ours:
            path.unlink()

    def adopt_legacy(self) -> Path:
        """Move an earlier version's plain output directory into the store as its first snapshot and
        link the output to it (the one moment the path does not exist: a rename and a symlink)."""
        first = self.root / f"snap-{0:06d}"
        os.rename(self.output, first)
        self.output.symlink_to(os.path.relpath(first, self.output.parent))
        return first

    def publish(self, snapshot: Path) -> None:
        """Make ``snapshot`` the one readers see (an atomic rename of a new link over the old one),
        then drop snapshots older than the previous one."""
        if self.output.exists() and not self.output.is_symlink():  # an empty directory the user made
            self.output.rmdir()
        link = self.root / f".link-{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(snapshot, self.output.parent))
        os.replace(link, self.output)
        keep = {snapshot}
        older = [p for p in self.snapshots() if _number(p) < _number(snapshot)]
        keep.update(older[-KEEP_PREVIOUS:] if KEEP_PREVIOUS else [])
        for path in self.snapshots():
            if path not in keep and _number(path) < _number(snapshot):
                shutil.rmtree(path, ignore_errors=True)

    def discard(self, snapshot: Path) -> None:
        """Remove a snapshot that never became current (a failed first run leaves nothing)."""
        shutil.rmtree(snapshot, ignore_errors=True)
        if not self.snapshots() and not self.output.is_symlink():
            shutil.rmtree(self.root, ignore_errors=True)


def _number(path: Path) -> int:
    found = _SNAPSHOT.match(path.name)
    return int(found.group(1)) if found else -1
