"""Sync and async written once.

A call's logic is a generator (a *flow*) that yields the blocking-or-awaitable work it needs as a
:class:`Step` (one operation in both forms) and receives the result, or the step's exception
thrown in at the ``yield``. :func:`run` does the steps blocking, :func:`arun` awaiting them: the
logic, its error handling included, exists once, and the sync and async API are thin wrappers.

>>> import asyncio
>>> def double(x):
...     y = yield Step(lambda: x, lambda: asyncio.sleep(0, x))
...     return 2 * y
>>> run(double(21)), asyncio.run(arun(double(21)))
(42, 42)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Flow", "Step", "arun", "run"]

T = TypeVar("T")


@dataclass(frozen=True)
class Step(Generic[T]):
    """One operation, blocking (``sync``) and awaitable (``aio``)."""

    sync: Callable[[], T]
    aio: Callable[[], Awaitable[T]]


#: a flow: yields steps, receives their results, returns the call's result
Flow = Generator[Step[Any], Any, T]


def run(flow: Flow[T]) -> T:
    """Drive ``flow`` with blocking steps."""
    value: Any = None
    error: BaseException | None = None
    while True:
        # Thrown in outside any ``except`` block: an exception the flow raises does not get the
        # step's as its implicit context (the openai backend relies on it to drop an echoed key).
        try:
            step = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            value = step.sync()
        except BaseException as exc:  # noqa: BLE001 - handed to the flow, which handles or re-raises it
            error = exc


async def arun(flow: Flow[T]) -> T:
    """Drive ``flow`` awaiting its steps (cancellation reaches the flow as ``CancelledError``)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            value = await step.aio()
        except BaseException as exc:  # noqa: BLE001 - handed to the flow
            error = exc
