"""Fake generators shared by the tests: small real ``AbstractEmbeddingGenerator`` subclasses,
each providing one behaviour or fault. Test modules import them from here, never from each other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent_embeddings import AbstractEmbeddingGenerator, BackendError, BackendUnavailableError
from agent_embeddings.generator import BackendResult


class CharStats(AbstractEmbeddingGenerator):
    """A real (if simple) embedding: letter counts, 8 dims, with token usage. Records each backend call."""

    provider = "test"

    def __init__(self, **kw: Any) -> None:
        super().__init__(model="char-stats", **kw)
        self.calls: list[list[str]] = []

    def _embed_batch(self, texts: list[str]) -> BackendResult:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t:
                out[i, ord(ch) % 8] += 1
        return BackendResult(out, prompt_tokens=sum(len(t.split()) for t in texts))


class Broken(AbstractEmbeddingGenerator):
    """Returns whatever ``output(texts)`` returns (wrong widths, NaN, lists...), to check the contract catches it."""

    def __init__(self, output: Callable[[list[str]], Any], **kw: Any) -> None:
        super().__init__(**kw)
        self.output = output

    def _embed_batch(self, texts: list[str]) -> Any:
        return self.output(texts)


class Lengths(AbstractEmbeddingGenerator):
    """Vectors from the texts themselves: (length, code-point sum mod 997, 1.0). Records each backend call.

    Thread-safe; ``delay_s`` makes every backend call take that long (so concurrent callers pile up)
    and ``fail_on`` fails a call whose texts contain that string.
    """

    provider = "lengths"

    def __init__(self, *, delay_s: float = 0.0, fail_on: str | None = None, **kw: Any) -> None:
        super().__init__(normalize=False, **kw)
        self.delay_s, self.fail_on = delay_s, fail_on
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    @property
    def batches(self) -> list[int]:
        """The size of each backend call, in order."""
        return [len(c) for c in self.calls]

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.calls.append(list(texts))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise RuntimeError(f"backend refused {self.fail_on!r}")
        return np.array([[len(t), sum(map(ord, t)) % 997, 1.0] for t in texts], dtype=np.float32)


class SlowLengths(Lengths):
    """``Lengths`` for micro-batching: each backend call takes 30 ms, and a batch with 'boom' fails."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(delay_s=0.03, fail_on="boom", **kw)


class SlowGenerator(AbstractEmbeddingGenerator):
    """Holds each backend call in flight for ``delay_s`` or until ``release`` is set, then raises ``fail``
    if set, else answers with ``inner``'s vectors (rows of [1.0, 2.0] without one): busy servers, graceful stops.

    ``started`` is set when a call reaches the backend, ``finished`` when one leaves it: a test can
    show that something happened while a model call was provably still running.
    """

    provider = "slow"

    def __init__(self, inner: AbstractEmbeddingGenerator | None = None, delay_s: float = 10.0) -> None:
        if inner is None:
            super().__init__(normalize=False)
        else:
            super().__init__(normalize=inner.normalize, model=inner.model)
        self.inner, self.delay_s = inner, delay_s
        self.fail: Exception | None = None
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def _embed_batch(self, texts: list[str]) -> Any:
        self.started.set()
        try:
            self.release.wait(self.delay_s)
            if self.fail is not None:
                raise self.fail
            if self.inner is None:
                return [[1.0, 2.0] for _ in texts]
            return self.inner.encode(texts, normalize=False)
        finally:
            self.finished.set()

    @property
    def output_dims(self) -> int | None:
        return self.inner.output_dims if self.inner is not None else super().output_dims


class Flaky(AbstractEmbeddingGenerator):
    """Wraps a real generator; fails with ``error`` on the first ``failures`` backend calls. Records the texts it embeds."""

    provider = "flaky"

    def __init__(self, inner: AbstractEmbeddingGenerator, failures: int, error: type[BackendError] = BackendUnavailableError,
                 **kwargs: object) -> None:
        super().__init__(normalize=True, model=inner.model, **kwargs)  # type: ignore[arg-type]
        self.inner, self.failures, self.error, self.calls = inner, failures, error, 0
        self.texts_seen: list[str] = []
        self._lock = threading.Lock()

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.calls += 1
            failing = self.calls <= self.failures
        if failing:
            raise self.error(f"flaky backend: call {self.calls} fails")
        self.texts_seen.extend(texts)
        return self.inner.encode(texts, normalize=False)
