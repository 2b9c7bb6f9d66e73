"""Dynamic micro-batching: concurrent small calls to one generator share one backend batch.

Callers (threads or asyncio tasks) put their texts on the generator's queue; a worker
thread takes what is queued — waiting at most ``max_wait_ms`` after the first request for
more — up to ``max_batch_size`` texts, makes one backend call and hands each caller its own
rows. A backend that runs calls side by side (``concurrent_calls``: ONNX Runtime's streams)
gets a worker per call it can run: one gathers the next batch while the others' run. When a shared call fails, each request is retried alone so that an error reaches only
the caller it belongs to — unless the error is a transient backend failure (unavailable,
timeout, rate limited, already retried by the generator's policy), which every caller gets.

Batches fill to the callers in flight: when a batch ends, the worker remembers how many calls
were in the system (those it just answered plus those queued behind them) and, for the next
batch, waits until that many have arrived, closing at once when they have, or when none came for
``max_wait_ms``, or after ``max_fill_ms`` in all. Closed-loop callers (a pool of threads, a
server's keep-alive clients) come back right after their answer, so batches hold all of them
instead of splitting into cohorts that take turns; a lone caller (one call in the system) never
waits. Calls that arrive whatever the answers do (independent clients: open-loop traffic) would
only idle the model meanwhile, so the worker keeps a score of whether the calls after a batch
came in a burst (more than twice the long-run arrival rate) and stops waiting while they do not,
looking again every 8th batch. ``fill: false`` keeps the plain window: wait ``max_wait_ms``
whenever the previous batch had more than one call.

With ``max_batch_tokens`` (TEI's knob of the same name; 16384 by default) the texts the worker took are sorted by
length and cut into backend calls of similar lengths, each at most that many padded tokens
(the longest text times the texts): one 200-token passage no longer pads fifteen short queries
to its length. Lengths are estimated from characters (about four per token), which is enough
to group texts and costs nothing next to a tokenizer pass.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from .cancellation import Token, current_token, on_behalf_of
from .errors import CallCancelledError
from .results import BackendResult

__all__ = ["BatcherSlot", "FillPolicy", "MicroBatcher", "MicroBatching", "Window", "forward_passes", "micro_batching_config"]


class MicroBatching(BaseModel):
    """``llm_parameters.micro_batching``: coalesce concurrent small calls into one batch."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = Field(default=True, description="Coalesce concurrent calls (default depends on the backend).")
    max_batch_size: PositiveInt = Field(default=64, description="Texts per coalesced backend call.")
    max_wait_ms: float = Field(
        default=5.0, ge=0, le=1000,
        description="Longest wait for the next call while a batch fills (fill: false: for all of them).",
    )
    fill: bool = Field(
        default=True,
        description="Wait for as many calls as were in flight at the end of the last batch, closing as soon as "
        "they are in, or when none came for max_wait_ms, or after max_fill_ms. False: wait max_wait_ms whenever "
        "the last batch had company.",
    )
    max_fill_ms: float = Field(
        default=20.0, ge=0, le=1000, description="With fill: the longest a batch waits in all for the calls it expects."
    )
    max_batch_tokens: PositiveInt | None = Field(
        default=16384,
        description="Padded tokens per backend call (longest text x texts, estimated at 4 characters per "
        "token); texts are grouped by length under it. None: batches bounded by max_batch_size only.",
    )


#: The average characters per token of natural text: estimates a text's tokens for max_batch_tokens
#: without a tokenizer (not a bound: hf_params.MAX_CHARS_PER_TOKEN is the cut of huge inputs).
AVERAGE_CHARS_PER_TOKEN = 4
#: A new group starts when the padding it saves exceeds this many tokens: below it, one more
#: backend call costs more than the padding it avoids.
_SPLIT_SAVING_TOKENS = 256


def length_groups(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped for backend calls: ascending length, each group's padded size (longest x
    count) within ``max_tokens``, and a new group wherever that saves more padding than a call costs.

    >>> length_groups([120, 5, 118, 4, 6], max_tokens=10_000)
    [[3, 1, 4], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0  # tokens of the current group's texts; its padded size is len(current) * the newest length
    for i in order:
        size = lengths[i]
        over_budget = (len(current) + 1) * size > max_tokens
        padding = len(current) * size - total  # what the group's texts would be padded by, with this one
        if current and (over_budget or padding > _SPLIT_SAVING_TOKENS):
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += size
    if current:
        groups.append(current)
    return groups


def forward_passes(lengths: list[int], size: int, budget: int, ties: list[str] | None = None) -> list[list[int]]:
    """Indices cut into forward passes: longest first (as sentence-transformers orders one call's
    texts), each of at most ``size`` texts and ``budget`` padded tokens (its longest length times its
    texts; a text alone may exceed it). Lengths that fit in one pass come back as one, unsorted.
    ``ties`` (the texts) orders equal lengths, so that the same texts in any order make the same
    passes: int8 quantizes activations per pass, so its vectors depend on a pass's company.

    >>> forward_passes([3, 50, 7, 40], size=3, budget=100)
    [[1, 3], [2, 0]]
    """
    if len(lengths) <= size and len(lengths) * max(lengths, default=0) <= budget:
        return [list(range(len(lengths)))]
    passes: list[list[int]] = []
    current: list[int] = []
    longest = 0
    key: Callable[[int], Any] = lengths.__getitem__ if ties is None else (lambda i: (lengths[i], ties[i]))
    for i in sorted(range(len(lengths)), key=key, reverse=True):
        if current and (len(current) >= size or longest * (len(current) + 1) > budget):
            passes.append(current)
            current = []
        if not current:
            longest = lengths[i]
        current.append(i)
    passes.append(current)
    return passes


@dataclass
class _Request:
    texts: list[str]
    future: Future[Any]
    #: the submitting call's cancellation token (None: a caller that cannot be cancelled)
    token: Token | None = None


_STOP = object()


@dataclass
class Window:
    """One batch's wait: how many calls it waits for, and until when (``FillPolicy.open``)."""

    expected: int
    deadline: float
    max_wait_s: float
    #: waiting for answered callers to come back (fill, seen to pay or looked at again)
    filling: bool

    def wait_s(self, have: int, now: float) -> float:
        """How long to wait for the next call with ``have`` calls in the batch (0: close it now).
        With fill, while calls keep coming, each wait for the next is at most max_wait_ms."""
        return max(min(self.deadline - now, self.max_wait_s), 0.0) if have < self.expected else 0.0


class FillPolicy:
    """When a micro-batch closes: the worker's decisions, apart from its queue and threads.

    Every method takes the time (``now``, in seconds) from the caller, so the policy runs as well on
    a test's made-up clock as on ``time.monotonic``. :meth:`open` starts a batch, :meth:`close` ends
    its wait and :meth:`ended` notes what the system held when its answers went out.
    """

    def __init__(self, config: MicroBatching) -> None:
        self.max_batch_size = config.max_batch_size
        self.max_wait_s = config.max_wait_ms / 1000.0
        self.fill = config.fill
        self.max_fill_s = config.max_fill_ms / 1000.0
        self.batches = 0
        self.last_batch_requests = 0
        #: calls in the system when the last batch ended: answered by it, or queued behind it
        self.in_flight = 0
        # whether waiting for answered callers pays (see _note_returns); 1: until shown otherwise
        self.returns = 1.0
        self.rate: float | None = None
        self._started_at: float | None = None
        self._queued_at_end = 0
        self._ended_at = 0.0

    @property
    def filling(self) -> bool:
        """Whether batches wait for answered callers to come back (``fill``, and seen to pay)."""
        return self.fill and self.returns >= 0.5

    def open(self, now: float) -> Window:
        """A batch starts (its first call taken) at ``now``: how many calls it waits for, and how long.

        With ``fill``: the calls in the system when the last batch ended, while its callers are
        seen to come back (else, or every 8th batch, to look again: none); without, anyone while
        callers arrive together."""
        self._note_rate(now)
        filling = self.fill and (self.returns >= 0.5 or self.batches % 8 == 0)
        if self.fill:
            expected = self.in_flight if filling else 1
        else:
            expected = self.max_batch_size if self.last_batch_requests > 1 else 1
        deadline = now + (self.max_fill_s if self.fill else self.max_wait_s)
        return Window(expected, deadline, self.max_wait_s, filling)

    def close(self, window: Window, arrived: int, answered: int, now: float) -> None:
        """The batch of ``window`` closed at ``now`` with ``arrived`` calls, ``answered`` of them still
        wanted (the others' callers left: with none left, no backend call is made)."""
        if window.filling and window.expected > 1:  # the calls beyond those queued at the last end came back since
            self._note_returns(arrived - self._queued_at_end, now - self._ended_at)
        if answered:
            self.batches += 1
            self.last_batch_requests = answered

    def ended(self, answered: int, queued: int, now: float) -> None:
        """A batch's answers go out at ``now``: ``answered`` callers, ``queued`` calls behind them."""
        self._queued_at_end = queued
        self.in_flight = answered + queued
        self._ended_at = now

    def _note_rate(self, now: float) -> None:
        """The long-run arrival rate: calls per second between batch starts (a moving average)."""
        if self._started_at is not None and now > self._started_at:
            rate = self.last_batch_requests / (now - self._started_at)
            self.rate = rate if self.rate is None else 0.8 * self.rate + 0.2 * rate
        self._started_at = now

    def _note_returns(self, arrived: int, waited_s: float) -> None:
        """Did the wait pay? Answered callers coming back arrive in a burst, well above the long-run
        rate (closed loop); arrivals that ignore the answers (open loop) come at that rate, and
        waiting for them only idles the model. A moving score of bursts decides the next waits."""
        burst = self.rate is None or max(arrived, 0) / max(waited_s, 1e-4) >= 2 * self.rate
        self.returns = 0.7 * self.returns + 0.3 * burst


class MicroBatcher:
    """One queue in front of a batch function, and ``workers`` threads that take batches from it.

    With more than one worker (a backend that runs calls side by side: ONNX Runtime's streams), one
    worker gathers the next batch and starts it while the others' batches run and their callers are
    answered, so the model does not wait for the queue (Triton's dynamic batcher over model
    instances works the same way). Workers take turns to gather, so each batch is cut as one worker
    would cut it.
    """

    def __init__(
        self, fn: Callable[[list[str]], Any], config: MicroBatching, *, name: str = "generator",
        on_batch: Callable[[int, int], None] | None = None, workers: int = 1,
    ) -> None:
        self._fn = fn
        #: told (texts, callers) of every backend call the workers make: the coalescing, visible
        self._on_batch = on_batch
        self.max_batch_size = config.max_batch_size
        self.max_batch_tokens = config.max_batch_tokens
        self.workers = max(1, workers)
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._gathering = threading.Lock()  # one worker gathers at a time
        self._shared = threading.Lock()  # the policy and the counters, which every worker updates
        self._closed = False
        self.batches = 0  # backend calls made, for tests and stats
        self.requests = 0
        self._carry: _Request | None = None  # taken from the queue, too big for the last batch: starts the next
        self.policy = FillPolicy(config)

    def submit(self, texts: list[str]) -> Future[Any]:
        """Queue ``texts``; the future resolves to the backend's output for exactly these texts.

        After :meth:`close` the future fails at once with a clear error. The check and the
        enqueue happen under the lock that ``close`` takes, so no request can slip in behind
        the stop marker and wait forever.
        """
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                future.set_exception(RuntimeError(f"{self._name}: micro-batcher is closed"))
                return future
            self._queue.put(_Request(texts, future, current_token()))
            if not self._threads:
                for i in range(self.workers):
                    label = f"microbatch-{self._name}" + (f"-{i}" if i else "")
                    thread = threading.Thread(target=self._loop, name=label, daemon=True)
                    thread.start()
                    self._threads.append(thread)
        return future

    @property
    def filling(self) -> bool:
        """Whether the workers wait for answered callers to come back (``fill``, and seen to pay)."""
        return self.policy.filling

    def close(self) -> None:
        """Finish queued work, then stop the workers; later submits fail at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
            if threads:
                self._queue.put(_STOP)  # behind every accepted request; each worker passes it on
        for thread in threads:
            thread.join(timeout=30)

    # -- the workers -----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._gathering:
                batch = self._gather()
            if batch is None:
                return
            self._run(batch)

    def _gather(self) -> list[_Request] | None:
        """The next batch's calls still wanted (None: stop). With the stop marker seen, it goes back on
        the queue for the next worker, behind nothing: no call is accepted after it."""
        first = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        if first is _STOP:
            self._queue.put(_STOP)
            return None
        with self._shared:
            window = self.policy.open(time.monotonic())
        batch, size = [first], len(first.texts)
        while size < self.max_batch_size:
            try:
                remaining = window.wait_s(len(batch), time.monotonic())
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)
                break
            if size + len(item.texts) > self.max_batch_size:
                self._carry = item  # starts the next batch
                break
            batch.append(item)
            size += len(item.texts)
        ready = [r for r in batch if r.future.set_running_or_notify_cancel()]  # a cancelled caller left
        with self._shared:
            self.policy.close(window, len(batch), len(ready), time.monotonic())
        return ready

    def _run(self, batch: list[_Request]) -> None:
        if not batch:
            return
        with on_behalf_of([r.token for r in batch]):  # a batch whose callers all left stops early
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Request]) -> None:
        with self._shared:
            self.batches += 1
            self.requests += len(batch)
        if self._on_batch is not None:
            self._on_batch(sum(len(r.texts) for r in batch), len(batch))
        if len(batch) == 1:  # nothing to split: the caller checks the raw output itself
            self._run_alone(batch[0], ended=True)
            return
        texts = [t for r in batch for t in r.texts]
        try:
            vectors, counts = self._call(texts)
        except BaseException as exc:  # noqa: BLE001 - find whose input failed: each alone
            self._ended(len(batch))
            if getattr(exc, "retryable", False) or isinstance(exc, CallCancelledError):
                # The backend is down or overloaded (and was retried already), or every caller left:
                # no one's input is to blame, so every caller gets the error now instead of n more
                # tries, one by one.
                for request in batch:
                    request.future.set_exception(exc)
                return
            for request in batch:
                self._run_alone(request)
            return
        self._ended(len(batch))
        start = 0
        for request in batch:
            end = start + len(request.texts)
            tokens = None if counts is None else sum(counts[start:end])
            request.future.set_result(
                BackendResult(vectors[start:end], tokens, None if counts is None else counts[start:end])
            )
            start = end

    def _call(self, texts: list[str]) -> tuple[np.ndarray, list[int] | None]:
        """One backend call, or one per group of similar lengths under ``max_batch_tokens``."""
        if self.max_batch_tokens is None:
            return _as_rows(self._fn(texts), len(texts))
        lengths = [len(t) // AVERAGE_CHARS_PER_TOKEN + 2 for t in texts]  # + the [CLS]/[SEP] a tokenizer adds
        groups = length_groups(lengths, self.max_batch_tokens)
        if len(groups) == 1:
            return _as_rows(self._fn(texts), len(texts))
        parts = [(group, *_as_rows(self._fn([texts[i] for i in group]), len(group))) for group in groups]
        vectors = np.empty((len(texts), parts[0][1].shape[1]), dtype=np.float32)
        counts: list[int] | None = [0] * len(texts)
        for group, part, part_counts in parts:
            vectors[group] = part
            if part_counts is None or counts is None:
                counts = None
            else:
                for i, count in zip(group, part_counts):
                    counts[i] = count
        return vectors, counts

    def _ended(self, answered: int) -> None:
        """Before answering: tell the policy the calls in the system, those about to be answered and
        those queued behind them (counted now, before the answered ones can come back and be counted
        twice). ``qsize`` is approximate, which is all an expectation needs."""
        queued = self._queue.qsize() + (self._carry is not None)
        with self._shared:
            self.policy.ended(answered, queued, time.monotonic())

    def _run_alone(self, request: _Request, ended: bool = False) -> None:
        try:
            result = self._fn(request.texts)
        except BaseException as exc:  # noqa: BLE001 - delivered to its caller
            if ended:
                self._ended(1)
            request.future.set_exception(exc)
            return
        if ended:
            self._ended(1)
        request.future.set_result(result)


def _as_rows(raw: Any, rows: int) -> tuple[np.ndarray, list[int] | None]:
    """Backend output as (matrix, per-text token counts or None), with one row per text."""
    counts = None
    if isinstance(raw, BackendResult):
        raw, counts = raw.vectors, raw.token_counts
    matrix = np.asarray(raw, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise ValueError(f"backend returned shape {matrix.shape} for {rows} texts")
    return matrix, (list(counts) if counts is not None else None)


def micro_batching_config(value: Any, default: bool) -> MicroBatching | None:
    """A generator's ``micro_batching`` argument as a config (None: off): a bool, a mapping or a config."""
    if value is None:
        return MicroBatching() if default else None
    if isinstance(value, bool):
        return MicroBatching(enabled=value)
    if isinstance(value, MicroBatching):
        return value
    return MicroBatching.model_validate(dict(value))


class BatcherSlot:
    """A generator's micro-batchers, one per kind of input (texts with different prompts never share
    a backend call), each started on the first small chunk that should go through it."""

    def __init__(
        self, fn: Callable[[list[str], Any], Any], on_batch: Callable[[int, int], None] | None = None,
        workers: Callable[[], int] = lambda: 1,
    ) -> None:
        self._fn = fn
        self._on_batch = on_batch
        self._workers = workers  # asked when a batcher starts: the backend may resolve it late (hf: auto)
        self._batchers: dict[Any, MicroBatcher] = {}
        self._lock = threading.Lock()

    def for_chunk(
        self, config: MicroBatching | None, chunk: list[str], name: str, kind: Any = None
    ) -> MicroBatcher | None:
        """The batcher when ``chunk`` should be coalesced with others (enabled, and smaller than a batch)."""
        if config is None or not config.enabled or len(chunk) >= config.max_batch_size:
            return None
        batcher = self._batchers.get(kind)
        if batcher is None:
            with self._lock:
                batcher = self._batchers.get(kind)
                if batcher is None:
                    label = name if kind is None else f"{name}-{kind}"
                    batcher = MicroBatcher(
                        lambda texts: self._fn(texts, kind), config, name=label, on_batch=self._on_batch,
                        workers=self._workers(),
                    )
                    self._batchers[kind] = batcher
        return batcher

    @property
    def current(self) -> MicroBatcher | None:
        """The batcher of plain calls (no input type), once started."""
        return self._batchers.get(None)

    def close(self) -> None:
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()
