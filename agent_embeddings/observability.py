"""What the SDK tells about its calls: hook records, the built-in statistics, redacted logs.

* :class:`CallRecord` is what the ``before_embed`` / ``after_embed`` hooks receive, once per
  generator call (``embed``/``encode``/``generate``... and their async twins).
* :class:`GeneratorStats` is the built-in collector each generator keeps (counts, errors by
  type, latency and batch-size histograms, cache hits); ``manager.stats()`` returns them and
  the servers' Prometheus endpoints export them.
* :func:`install_log_redaction` makes every log record, of every logger, go through
  :func:`~agent_embeddings.redaction.redact` (installed when the package is imported).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .plugins import pm
from .redaction import redact, remember_secret

__all__ = [
    "BATCH_BUCKETS",
    "call_finished",
    "call_started",
    "LATENCY_BUCKETS_S",
    "CallRecord",
    "GeneratorStats",
    "install_log_redaction",
    "redact",
    "remember_secret",
]

log = logging.getLogger("agent_embeddings.observability")

#: Upper bounds of the latency histogram, seconds (Prometheus-style, +Inf implied).
LATENCY_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Upper bounds of the batch-size histogram, texts per call.
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclass
class CallRecord:
    """One generator call, as the observability hooks see it.

    ``before_embed`` gets it with the request fields filled; ``after_embed`` gets the same
    object completed. ``extra`` is free for plugins (e.g. a tracing span opened in
    ``before_embed`` and closed in ``after_embed``).
    """

    generator: str
    provider: str
    model: str | None
    batch_size: int
    started: float = field(default_factory=time.perf_counter)
    #: texts answered from the cache (0 without a cache); ``batch_size - cache_hits`` went to the backend
    cache_hits: int = 0
    dims: int | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    #: the exception's class name when the call failed, else None
    error_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_type is None


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> dict[str, Any]:
        cumulative, total = [], 0
        for count in self.counts:
            total += count
            cumulative.append(total)
        return {"buckets": list(zip([*self.bounds, float("inf")], cumulative)), "sum": self.sum, "count": total}


class GeneratorStats:
    """Thread-safe running totals of one generator's calls (the built-in collector)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.errors: dict[str, int] = {}
        self.texts = 0
        self.cache_hits = 0
        self.prompt_tokens = 0
        self.retries = 0
        self.fallbacks = 0
        self.in_flight = 0
        self._latency = _Histogram(LATENCY_BUCKETS_S)
        self._batch = _Histogram(BATCH_BUCKETS)
        self._micro_texts = _Histogram(BATCH_BUCKETS)
        self._micro_callers = _Histogram(BATCH_BUCKETS)

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self, record: CallRecord) -> None:
        with self._lock:
            self.in_flight -= 1
            self.calls += 1
            self.texts += record.batch_size
            self.cache_hits += record.cache_hits
            self.prompt_tokens += record.prompt_tokens or 0
            if record.error_type is not None:
                self.errors[record.error_type] = self.errors.get(record.error_type, 0) + 1
            self._latency.observe(record.latency_s or 0.0)
            self._batch.observe(record.batch_size)

    def note_retry(self, exc: BaseException | None = None) -> None:
        with self._lock:
            self.retries += 1

    def note_micro_batch(self, texts: int, callers: int) -> None:
        """One backend call of the micro-batcher: ``texts`` coalesced from ``callers`` calls."""
        with self._lock:
            self._micro_texts.observe(texts)
            self._micro_callers.observe(callers)

    def note_fallback(self) -> None:
        with self._lock:
            self.fallbacks += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "errors": dict(self.errors),
                "texts": self.texts,
                "cache_hits": self.cache_hits,
                "prompt_tokens": self.prompt_tokens,
                "retries": self.retries,
                "fallbacks": self.fallbacks,
                "in_flight": self.in_flight,
                "latency_s": self._latency.snapshot(),
                "batch_size": self._batch.snapshot(),
                # what the micro-batcher made of the calls: texts and callers per backend call
                "micro_batch_texts": self._micro_texts.snapshot(),
                "micro_batch_callers": self._micro_callers.snapshot(),
            }


# -- one generator call, as the hooks and the statistics see it ------------------------------
def call_started(stats: GeneratorStats, generator: str, provider: str, model: str | None, texts: int) -> CallRecord:
    """Count the call in flight and fire ``before_embed`` (a failing hook is logged, never raised)."""
    record = CallRecord(generator, provider, model, texts)
    stats.started()
    hook = pm.hook.before_embed
    if hook.get_hookimpls():  # pluggy's call machinery (~5 us) only when a plugin listens: a server pays it per request
        try:
            hook(record=record)
        except Exception:  # noqa: BLE001 - a broken metrics plugin never fails a call
            log.exception("a before_embed hook failed (ignored)")
    return record


def call_finished(stats: GeneratorStats, record: CallRecord, result: Any, error: BaseException | None) -> None:
    """Complete ``record`` from the result (an ``Embeddings``) or the error, count it, fire ``after_embed``."""
    record.latency_s = time.perf_counter() - record.started
    if result is not None:
        record.dims = int(result.vectors.shape[1])
        record.prompt_tokens = result.prompt_tokens
        record.cache_hits = result.cache_hits
    if error is not None:
        record.error_type = type(error).__name__
    stats.finished(record)
    hook = pm.hook.after_embed
    if hook.get_hookimpls():
        try:
            hook(record=record)
        except Exception:  # noqa: BLE001
            log.exception("an after_embed hook failed (ignored)")


# -- secrets never reach a log ---------------------------------------------------------------
_installed = False


def install_log_redaction() -> None:
    """Redact every log record of every logger (message, arguments, traceback, stack).

    A record factory rather than a filter: a filter on a logger does not see the records of
    its children, a handler filter only the records of that handler, and httpx, uvicorn, grpc
    or the root logger print what they are given (a URL with its password, a header value in
    an exception). The factory runs once per record that a logger lets through, before any
    handler; a record with nothing to hide is left untouched. Idempotent.
    """
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: shown as such, redacted (logging's own
        # report of it would print the arguments as they are)
        record.msg, record.args = redact(f"{record.msg} [arguments that do not fit it: {record.args!r}]"), None
        return
    clean = redact(message)
    if clean != message:
        _redact_arguments(record, clean)
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        safe = redact(text)
        if safe != text:  # handlers would format the exception again from exc_info: drop it
            record.exc_text, record.exc_info = safe, None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _redact_arguments(record: logging.LogRecord, clean: str) -> None:
    """Redact the format and each argument, keeping their shape (uvicorn's access formatter
    unpacks ``record.args``); if that does not give ``clean``, keep ``clean`` alone."""
    def safe(value: Any) -> Any:
        if isinstance(value, (int, float)) or value is None:
            return value
        text = value if isinstance(value, str) else str(value)
        redacted = redact(text)
        return value if redacted == text else redacted

    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(safe(a) for a in record.args)
    elif isinstance(record.args, Mapping):
        record.args = {k: safe(v) for k, v in record.args.items()}
    try:
        if record.getMessage() == clean:
            return
    except Exception:  # noqa: BLE001, S110 - an argument that changed type: fall back below
        pass
    record.msg, record.args = clean, None
