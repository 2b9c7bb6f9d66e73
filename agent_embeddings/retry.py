"""Retries of transient backend failures: one policy per generator (``llm_parameters.retry``).

Only errors whose ``retryable`` flag is set are retried — :class:`BackendUnavailableError`,
:class:`BackendTimeoutError` and :class:`RateLimitError`; a bad request, a wrong key or a
contract violation fails at once. Backends whose client library retries by itself map the
policy onto it instead (``openai:`` onto the client's ``max_retries``/``timeout``, ``aios:``
onto gRPC's retry policy); every other backend, plugins included, gets :func:`retry_call`.

>>> policy = RetryPolicy(attempts=3, initial_backoff_s=0.0)
>>> calls = []
>>> def flaky():
...     calls.append(1)
...     if len(calls) < 3:
...         raise BackendUnavailableError("down")
...     return "ok"
>>> retry_call(flaky, policy), len(calls)
('ok', 3)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from .errors import BackendError

__all__ = ["RetryPolicy", "aretry_call", "is_transient", "retry_call"]

log = logging.getLogger("agent_embeddings.retry")
T = TypeVar("T")


class RetryPolicy(BaseModel):
    """``llm_parameters.retry``: how transient failures (unavailable, timeout, rate limited) are retried."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    attempts: PositiveInt = Field(default=3, le=10, description="Tries in all, the first one included (1: no retry).")
    initial_backoff_s: float = Field(default=0.1, ge=0, le=60, description="Wait before the first retry, seconds.")
    max_backoff_s: float = Field(default=2.0, ge=0, le=300, description="Longest wait between two tries, seconds.")
    multiplier: float = Field(default=2.0, ge=1, le=10, description="Each wait is this many times the previous one.")
    deadline_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="Total time budget of one call with its retries: no retry starts after it.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(f"max_backoff_s={self.max_backoff_s} is below initial_backoff_s={self.initial_backoff_s}")
        return self

    def backoff(self, retry: int) -> float:
        """Wait before retry number ``retry`` (1-based): exponential, capped, with full jitter on its upper half."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return base / 2 + random.random() * base / 2


def is_transient(exc: BaseException) -> bool:
    """True for the SDK's retryable backend errors (unavailable, timeout, rate limited)."""
    return isinstance(exc, BackendError) and bool(getattr(exc, "retryable", False))


def _next_wait(policy: RetryPolicy, tried: int, started: float, exc: BaseException) -> float | None:
    """Seconds to wait before the next try, or None when the error is final."""
    if not is_transient(exc) or tried >= policy.attempts:
        return None
    wait = policy.backoff(tried)
    if time.monotonic() - started + wait >= policy.deadline_s:
        return None
    return wait


def retry_call(
    fn: Callable[[], T], policy: RetryPolicy, *, who: str = "backend", on_retry: Callable[[BaseException], None] | None = None
) -> T:
    """Call ``fn``; on a transient error wait and call again, within ``policy``. The last error is raised."""
    started = time.monotonic()
    tried = 0
    while True:
        tried += 1
        try:
            return fn()
        except BaseException as exc:
            wait = _next_wait(policy, tried, started, exc)
            if wait is None:
                raise
            log.warning("%s: %s (try %d of %d); retrying in %.2fs", who, type(exc).__name__, tried, policy.attempts, wait)
            if on_retry is not None:
                on_retry(exc)
            time.sleep(wait)


async def aretry_call(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    who: str = "backend",
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Async twin of :func:`retry_call` (waits with ``asyncio.sleep``)."""
    started = time.monotonic()
    tried = 0
    while True:
        tried += 1
        try:
            return await fn()
        except BaseException as exc:
            wait = _next_wait(policy, tried, started, exc)
            if wait is None:
                raise
            log.warning("%s: %s (try %d of %d); retrying in %.2fs", who, type(exc).__name__, tried, policy.attempts, wait)
            if on_retry is not None:
                on_retry(exc)
            await asyncio.sleep(wait)

