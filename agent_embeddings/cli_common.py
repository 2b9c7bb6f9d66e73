"""What the CLI's commands share: building the spec's manager, choosing its generator, logging for
long jobs, and the examples at the end of each ``--help``."""

from __future__ import annotations

import argparse
import logging
import queue
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from .errors import UnknownGeneratorError
from .progress import DEFAULT_LOG_EVERY_S

__all__ = ["LOG_QUEUE_RECORDS", "PROG", "add_log_flags", "examples", "load_manager", "log_to_stderr", "pick_name", "queued_log"]

PROG = "agent-embeddings"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def load_manager(spec: str) -> Any:
    from .manager import EmbeddingGeneratorManager

    return EmbeddingGeneratorManager.from_subject_spec(spec)


def pick_name(manager: Any, name: str | None) -> str:
    if name is not None:
        manager.get(name)  # unknown names raise with the list of known ones
        return name
    names = manager.names()
    if len(names) != 1:
        listed = ", ".join(names) or "none"
        raise UnknownGeneratorError(f"the spec has {len(names)} embedding generators ({listed}); choose one with --name")
    return str(names[0])


def examples(*lines: str) -> str:
    """A ``--help`` epilog from lines ``"agent-embeddings ...  # what it does"``.

    Tests parse every example with the real parser, so an example cannot name a flag that does
    not exist.
    """
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever ``sys.stderr`` is when a record is written (tests swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _stderr_handler() -> logging.Handler:
    """The CLI's log lines: one per record, with a timestamp, on the current ``sys.stderr``."""
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


@contextmanager
def log_to_stderr(level: str) -> Iterator[None]:
    """While the block runs, the ``agent_embeddings`` loggers' records at ``level`` and above go to
    stderr, one line each with a timestamp.

    Long jobs report through logging away from a terminal (``nohup``, cron, CI): without a
    handler, Python drops INFO records, and a job that prints nothing for minutes looks hung.
    Only our loggers: libraries keep their own settings. Undone afterwards (tests call ``main``
    in-process many times).
    """
    logger = logging.getLogger("agent_embeddings")
    handler = _stderr_handler()
    saved = logger.level
    logger.setLevel(level.upper())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


#: Records ``serve``'s log holds for its writer thread: ~10 MB at most. A reader that falls this far
#: behind loses records (counted, and the count written), never the server's memory or its time.
LOG_QUEUE_RECORDS = 10_000


class _BoundedQueueHandler(QueueHandler):
    """A ``QueueHandler`` that never waits: a record that finds the queue full is counted and dropped,
    and the count goes into the queue as a warning of its own once there is room again."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.capacity = records.maxsize
        self.dropped = 0
        self._count = threading.Lock()  # loggers on several threads can find the queue full at once

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.dropped:  # say how many were lost before the next record
            dropped = self.take_dropped()
            if dropped and not self._put(_dropped_notice(dropped, self.capacity)):
                self._lose(dropped + 1)
                return
        if not self._put(record):
            self._lose(1)

    def take_dropped(self) -> int:
        with self._count:
            dropped, self.dropped = self.dropped, 0
        return dropped

    def _put(self, record: logging.LogRecord) -> bool:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            return False
        return True

    def _lose(self, records: int) -> None:
        with self._count:
            self.dropped += records


class _Listener(QueueListener):
    """A ``QueueListener`` on a bounded queue: ``stop`` waits for room for its sentinel (the stdlib's
    ``put_nowait`` would raise on a full queue)."""

    def enqueue_sentinel(self) -> None:
        self.queue.put(self._sentinel)  # type: ignore[attr-defined]


def _dropped_notice(dropped: int, capacity: int) -> logging.LogRecord:
    """The warning that says ``dropped`` records were lost to a full queue of ``capacity``."""
    return logging.getLogger(__name__).makeRecord(
        __name__, logging.WARNING, __file__, 0, "%d log records dropped: the log's reader fell %d records behind",
        (dropped, capacity), None)


@contextmanager
def queued_log(level: str, *, capacity: int = LOG_QUEUE_RECORDS) -> Iterator[None]:
    """A server's log (``serve``): every logger's records at ``level`` and above, one line each on
    stderr, written by a thread of its own (the standard library's ``QueueHandler`` and
    ``QueueListener``, as the logging cookbook advises for handlers that block).

    The event loop only formats and queues a record, never waits on stderr: writing the access log
    line itself cost ~200 µs of CPU per request at 150 requests/s on 2 cores (docs/performance.md,
    the sixth session), and a log reader that stopped reading would have frozen serving on a full
    pipe. The queue holds ``capacity`` records: past that, records are dropped and counted (a
    warning with the count follows once the reader catches up), so a reader that stops for good
    costs serving neither memory nor time. What is queued is written when the block ends (which
    waits for the reader, as any write to stderr would). As ``logging.basicConfig``: nothing changes
    where the root logger has handlers already (an application embedding the CLI, pytest). Lines
    written to stderr meanwhile must be one write each (``cli._say``), or a record may land inside.
    """
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    records: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=capacity)
    handler = _stderr_handler()
    listener = _Listener(records, handler)
    queued = _BoundedQueueHandler(records)
    saved = root.level
    root.setLevel(level.upper())
    root.addHandler(queued)
    listener.start()
    try:
        yield
    finally:
        root.removeHandler(queued)
        listener.stop()  # the lines still queued are written first
        if dropped := queued.take_dropped():  # dropped after the last record that found room
            handler.handle(_dropped_notice(dropped, capacity))
        root.setLevel(saved)


def add_log_flags(p: argparse.ArgumentParser, what: str) -> None:
    """``--log-level`` and ``--log-every`` for a long command (``what``: its rows or texts)."""
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="log level of the lines on stderr (default: info, which includes the progress lines)")
    p.add_argument("--log-every", type=float, default=DEFAULT_LOG_EVERY_S, metavar="SECONDS",
                   help=f"when stderr is not a terminal (nohup, cron, CI): a line with the {what} done, the rate "
                        f"and the time left every SECONDS (default: {DEFAULT_LOG_EVERY_S:g})")
