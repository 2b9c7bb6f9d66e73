"""Time inside the model, for the idle-model and CPU-per-request figures (issue 24, item 1).

A :class:`ModelClock` wraps a model's ``encode`` (one instance in-process, or the ``hf:`` backend's
loaded model inside a server started through :mod:`benchmarks.timed_serve`, either engine) and
adds up, per call: wall seconds inside ``encode``, CPU seconds of the calling thread inside it, and
texts. With ONNX Runtime's streams several calls run at once: the model is busy while any runs
(``busy_s``, the union), and ``pass_s`` adds up every call's own wall time (streams busy on average =
pass_s / wall). The wrapper costs two clock reads and a lock per forward pass (about
2 µs against 20-40 ms passes), so it does not move what it measures.

The model's CPU is the calling thread's CPU inside ``encode`` plus all CPU of torch's intra-op
(OpenMP) worker threads: the native threads that appear during the first ``encode`` and are not
Python threads (for ONNX Runtime, those its session starts: :meth:`ModelClock.wrap_pool`). What the process spends outside that is the request handling, batching and
Python around the model, less two parts that are told apart: the instrument's own CPU (the
thread of :mod:`benchmarks.timed_serve` that publishes the readings: about 0.3-1 ms each, ten a
second, so it grew with the window's wall time, not with the requests, and was counted as the
server's until it was read separately) and ``aside_cpu_s``, backend work outside ``encode`` that
:meth:`ModelClock.wrap_aside` times (``hf:``'s second tokenizer pass for the usage token counts, now
only for texts ``encode``'s own attention masks did not count).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(tid: int) -> float:
    """CPU seconds of one thread of this process, to the nanosecond (0 when it is gone): Linux's
    per-thread CPU clock, ``((~tid) << 3) | 6`` (CPUCLOCK_SCHED | CPUCLOCK_PERTHREAD)."""
    try:
        return time.clock_gettime(((~tid) << 3) | 6)
    except OSError:
        return 0.0


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a whole process, every thread, ended ones too, to the nanosecond: Linux's
    process CPU clock, ``((~pid) << 3) | 2`` (CPUCLOCK_SCHED); where that is refused, utime + stime
    from ``/proc/<pid>/stat`` (clock ticks)."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK


def main_thread_cpu_s(pid: int) -> float:
    """CPU seconds of another process's main thread (a server's event loop), to the nanosecond:
    ``/proc/<pid>/task/<pid>/schedstat`` (Linux refuses another process's thread CPU clock; the main
    thread lives as long as its process, so nothing of it is lost with an ended thread)."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9


def _tids() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


@dataclass
class ClockReading:
    """Cumulative figures at one moment; subtract two readings for a window."""

    wall_s: float  # time.perf_counter() at the reading
    busy_s: float  # wall seconds in which some encode call ran (with streams, calls overlap: the union)
    model_cpu_s: float  # CPU of the calling threads inside encode + all CPU of the intra-op workers
    process_cpu_s: float  # the whole process
    calls: int
    texts: int
    #: CPU of the backend's own work outside ``encode`` (the hf usage token count), part of the process's
    aside_cpu_s: float = 0.0
    #: CPU of the thread publishing the readings (benchmarks.timed_serve): the instrument, not the server
    clock_cpu_s: float = 0.0
    #: CPU of the main thread (a server's event loop: the request handling alone, whatever the batches)
    loop_cpu_s: float = 0.0
    #: wall seconds inside encode, every call's own (= busy_s when calls never overlap)
    pass_s: float = 0.0
    #: wall seconds of the cyclic garbage collector (every thread waits through them), and how many
    #: full (generation 2) collections there were; only where the clock watches the collector
    gc_s: float = 0.0
    gc_full: int = 0

    def minus(self, earlier: ClockReading) -> ClockReading:
        return ClockReading(*(a - b for a, b in zip(asdict(self).values(), asdict(earlier).values())))

    @property
    def idle_fraction(self) -> float:
        """Share of the window's wall time in which the model computed nothing."""
        return 1.0 - self.busy_s / self.wall_s if self.wall_s else float("nan")

    @property
    def outside_cpu_s(self) -> float:
        """Process CPU outside the model, the instrument's own CPU left out; the backend's work aside
        from ``encode`` is in it (:meth:`aside_us_per` tells how much)."""
        return self.process_cpu_s - self.model_cpu_s - self.clock_cpu_s

    def outside_us_per(self, requests: int) -> float:
        """:attr:`outside_cpu_s` per request (µs)."""
        return self.outside_cpu_s / requests * 1e6 if requests else float("nan")

    def loop_us_per(self, requests: int) -> float:
        """The main thread's CPU per request (µs): a server's event loop."""
        return self.loop_cpu_s / requests * 1e6 if requests else float("nan")

    def aside_us_per(self, requests: int) -> float:
        """The part of :meth:`outside_us_per` that the backend spent outside ``encode`` (µs per request)."""
        return self.aside_cpu_s / requests * 1e6 if requests else float("nan")


class ModelClock:
    """Adds up time inside ``encode``; :meth:`wrap` makes the timed replacement of a function."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.busy_s = 0.0
        self.pass_s = 0.0
        self._running = 0  # calls inside encode now
        self._busy_since = 0.0
        self.caller_cpu_s = 0.0
        self.calls = 0
        self.texts = 0
        self.aside_cpu_s = 0.0
        #: the publishing thread's own CPU so far (it sets this before each reading)
        self.clock_cpu_s = 0.0
        #: torch's intra-op worker threads, found on the first call
        self.workers: set[int] | None = None
        #: a runtime's own thread pool, started with its session before any call (ONNX Runtime's)
        self.pool: set[int] = set()
        self.gc_s = 0.0
        self.gc_full = 0
        self._gc_since = 0.0

    def watch_gc(self) -> None:
        """Time the cyclic collector's pauses (``gc.callbacks``; a server process's, from its start)."""
        import gc

        def collected(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                self._gc_since = time.perf_counter()
                return
            self.gc_s += time.perf_counter() - self._gc_since  # the collector holds the GIL: no lock needed
            self.gc_full += info["generation"] == 2

        gc.callbacks.append(collected)

    def wrap(self, encode: Callable[..., Any]) -> Callable[..., Any]:
        def timed_encode(*args: Any, **kwargs: Any) -> Any:
            first = self.workers is None
            before = _tids() if first else set()
            t0, c0 = time.perf_counter(), time.thread_time()
            with self._lock:
                if self._running == 0:
                    self._busy_since = t0
                self._running += 1
            try:
                return encode(*args, **kwargs)
            finally:
                t1, c1 = time.perf_counter(), time.thread_time()
                sentences = kwargs.get("sentences", args[-1] if args else ())
                with self._lock:
                    self._running -= 1
                    if self._running == 0:
                        self.busy_s += t1 - self._busy_since
                    self.pass_s += t1 - t0
                    self.caller_cpu_s += c1 - c0
                    self.calls += 1
                    self.texts += 1 if isinstance(sentences, str) else len(sentences)
                    if first:
                        python = {t.native_id for t in threading.enumerate()}
                        self.workers = (_tids() - before) - python

        return timed_encode

    def wrap_pool(self, start: Callable[..., Any]) -> Callable[..., Any]:
        """Count the native threads that ``start`` creates (a session's intra-op pool: ONNX Runtime
        starts it when the session is made, before the first ``encode``) as the model's."""
        def timed_start(*args: Any, **kwargs: Any) -> Any:
            before = _tids()
            try:
                return start(*args, **kwargs)
            finally:
                python = {t.native_id for t in threading.enumerate()}
                with self._lock:
                    self.pool |= (_tids() - before) - python

        return timed_start

    def wrap_aside(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Time ``fn``'s thread CPU as backend work outside the model (it runs outside ``encode``)."""
        def timed_aside(*args: Any, **kwargs: Any) -> Any:
            c0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - c0
                with self._lock:
                    self.aside_cpu_s += spent

        return timed_aside

    def read(self) -> ClockReading:
        # process_time and the thread clocks read to the nanosecond: short windows stay exact
        workers = sum(thread_cpu_s(t) for t in (self.workers or set()) | self.pool)
        with self._lock:
            now = time.perf_counter()
            busy = self.busy_s + (now - self._busy_since if self._running else 0.0)  # a call still running counts
            return ClockReading(now, busy, self.caller_cpu_s + workers,
                                time.process_time(), self.calls, self.texts, self.aside_cpu_s, self.clock_cpu_s,
                                thread_cpu_s(threading.main_thread().native_id or 0), self.pass_s,
                                self.gc_s, self.gc_full)


def instance_clock(model: Any) -> ModelClock:
    """Time one model object's ``encode`` (in-process benchmarks); undo with ``del model.encode``."""
    clock = ModelClock()
    model.encode = clock.wrap(model.encode)
    return clock


def read_server_clock(path: Path, timeout_s: float = 5.0) -> ClockReading:
    """The latest reading a :mod:`benchmarks.timed_serve` server wrote (it writes every 100 ms):
    waits for one newer than now, so a window's edges are at most ~100 ms late."""
    asked = time.time()
    deadline = asked + timeout_s
    while time.time() < deadline:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if data and data["written"] >= asked:
            return ClockReading(**data["reading"])
        time.sleep(0.02)
    raise TimeoutError(f"no model-clock reading in {path} after {timeout_s}s")
