"""Cancellation reaches the worker thread: a cancelled async call tells the thread running it, which stops."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from agent_embeddings import AbstractEmbeddingGenerator
from agent_embeddings.cancellation import cancellable, raise_if_cancelled
from agent_embeddings.errors import CallCancelledError


class Steps(AbstractEmbeddingGenerator):
    """A backend that works in 10 ms steps, asking between them whether its call was cancelled."""

    provider = "steps"

    def __init__(self, steps: int = 500) -> None:
        super().__init__(normalize=False, micro_batching=False)
        self.steps = steps
        self.started = threading.Event()
        self.stopped_after: list[int] = []

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        self.started.set()
        for step in range(self.steps):
            try:
                raise_if_cancelled(self._who())
            except CallCancelledError:
                self.stopped_after.append(step)
                raise
            time.sleep(0.01)
        return np.ones((len(texts), 2), dtype=np.float32)


def test_outside_a_cancellable_call_nothing_is_cancelled():
    raise_if_cancelled("no call")  # the sync path, a micro-batcher's thread: never raises
    gen = Steps(steps=3)
    assert gen.encode(["a", "b"]).shape == (2, 2) and gen.stopped_after == []


def test_a_cancelled_await_tells_the_thread_it_started():
    started, stopped = threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        for _ in range(1000):
            try:
                raise_if_cancelled("work")
            except CallCancelledError:
                stopped.set()
                raise
            time.sleep(0.01)

    async def main() -> None:
        task = asyncio.create_task(cancellable(lambda: asyncio.to_thread(work)))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert stopped.wait(2)  # within a step or two (10 ms each), not after the 10 s of work


def test_a_cancelled_aembed_stops_the_backend_between_steps():
    """The base class's async path (`_acall_backend`) carries the token: every backend's worker thread gets it."""
    gen = Steps()

    async def main() -> float:
        task = asyncio.create_task(gen.aembed(["x"] * 4))
        assert await asyncio.to_thread(gen.started.wait, 10)
        await asyncio.sleep(0.05)
        task.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return cancelled_at

    cancelled_at = asyncio.run(main())  # asyncio.run waits for the default executor's threads
    assert gen.stopped_after and gen.stopped_after[0] < gen.steps
    assert time.monotonic() - cancelled_at < 2  # the 5 s of steps did not run out
    assert gen.encode(["y"]).shape == (1, 2)  # and the generator still works
