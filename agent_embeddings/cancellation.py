"""Cancellation that reaches the worker thread of a backend call.

asyncio cancels the task that awaits a worker thread, never the thread: without more, a model
keeps computing for a caller who left (an HTTP client that hung up, a server shutting down),
and holds the model meanwhile. The async call path runs each backend call under
:func:`cancellable`, which puts a token in a context variable and sets it when the awaiting
task is cancelled. ``asyncio.to_thread`` runs its function in a copy of the caller's context,
so the worker sees the same token; a backend that works in steps (``hf:`` does one forward pass
at a time) calls :func:`raise_if_cancelled` between them.

A micro-batch serves several callers at once: its worker thread runs it :func:`on_behalf_of` their
calls, and it stops only once every one of them was cancelled.

>>> raise_if_cancelled("hf generator 'x'")  # outside a cancellable call: never raises
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Protocol, TypeVar

from .errors import CallCancelledError

__all__ = ["cancellable", "current_token", "on_behalf_of", "raise_if_cancelled"]

T = TypeVar("T")


class Token(Protocol):
    def is_set(self) -> bool: ...


class _Flag:
    """A call's token: set by the event loop, read by the worker thread (an attribute is enough
    under the GIL, and costs a fraction of a threading.Event on every backend call)."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def is_set(self) -> bool:
        return self.cancelled


class _All:
    """Set once every one of ``tokens`` is: a shared batch whose callers all left."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = tokens

    def is_set(self) -> bool:
        return all(t.is_set() for t in self.tokens)


_TOKEN: ContextVar[Token | None] = ContextVar("agent_embeddings_cancel_token", default=None)


async def cancellable(call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call()``; if this task is cancelled meanwhile, tell the worker thread it started."""
    token = _Flag()
    reset = _TOKEN.set(token)
    try:
        return await call()
    except asyncio.CancelledError:
        token.cancelled = True
        raise
    finally:
        _TOKEN.reset(reset)


def current_token() -> Token | None:
    """The token of the call this code runs for (None: not a cancellable call)."""
    return _TOKEN.get()


@contextlib.contextmanager
def on_behalf_of(tokens: Sequence[Token | None]) -> Iterator[None]:
    """Work done in this block is for calls with these tokens: cancelled once all of them are (never
    while one of them is not cancellable: a sync caller, say)."""
    if not tokens or any(t is None for t in tokens):
        yield
        return
    reset = _TOKEN.set(_All(tokens))  # type: ignore[arg-type]  # no None left
    try:
        yield
    finally:
        _TOKEN.reset(reset)


def raise_if_cancelled(who: str) -> None:
    """Raise :class:`CallCancelledError` when the call this thread works for was cancelled."""
    token = _TOKEN.get()
    if token is not None and token.is_set():
        raise CallCancelledError(f"{who}: the call was cancelled (its caller left); stopped early")
