"""Retries of transient backend failures: one policy per generator (``llm_parameters.retry``).

Only errors whose ``retryable`` flag is set are retried — :class:`BackendUnavailableError`,
:class:`BackendTimeoutError` and :class:`RateLimitError`; a bad request, a wrong key or a
contract violation fails at once. ``deadline_s`` is the budget of one call *with* its
retries: no retry starts once the next wait would cross it, a ``Retry-After`` the server asks
for is honoured when it fits, and a backend that can bound a request (``openai:``) gives each
attempt only what is left of the budget (:func:`remaining`). ``aios:`` maps the policy onto
gRPC's own retries, which stay within the call's deadline.

The loop is tenacity's (``stop_before_delay`` is the total deadline); this module only adds the
policy, the wait that honours ``Retry-After`` and the deadline that attempts can read. The first
try runs before tenacity is set up: most calls succeed at once, and tenacity's machinery costs
~20 µs a call (~45 µs async), paid per backend call, which in a server is per micro-batch.

>>> from agent_embeddings.errors import BackendUnavailableError
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

import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from .errors import BackendError

__all__ = ["RetryPolicy", "aretry_call", "is_transient", "remaining", "retry_call"]

log = logging.getLogger("agent_embeddings.retry")
T = TypeVar("T")

# Monotonic time at which the call in progress (in this thread or task) must end.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("agent_embeddings_deadline", default=None)


class RetryPolicy(BaseModel):
    """``llm_parameters.retry``: how transient failures (unavailable, timeout, rate limited) are retried."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    attempts: PositiveInt = Field(default=3, le=10, description="Tries in all, the first one included (1: no retry).")
    initial_backoff_s: float = Field(default=0.1, ge=0, le=60, description="Wait before the first retry, seconds.")
    max_backoff_s: float = Field(default=2.0, ge=0, le=300, description="Longest wait between two tries, seconds.")
    multiplier: float = Field(default=2.0, ge=1, le=10, description="Each wait is this many times the previous one.")
    deadline_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="Total time budget of one call with its retries: no retry starts after it, and backends "
        "that can bound a request give each try only what is left.",
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


def remaining() -> float | None:
    """Seconds left of the current call's retry budget (None outside :func:`retry_call`)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def _retrying(
    policy: RetryPolicy, who: str, on_retry: Callable[[BaseException], None] | None, kind: Any, started: float
) -> Any:
    import tenacity

    def wait(state: tenacity.RetryCallState) -> float:
        backoff = policy.backoff(state.attempt_number)
        exc = state.outcome.exception() if state.outcome is not None else None
        asked = getattr(exc, "retry_after_s", None)  # a server's Retry-After, when it fits the budget
        return max(backoff, asked) if isinstance(asked, (int, float)) and asked > 0 else backoff

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "%s: %s (try %d of %d); retrying in %.2fs",
            who, type(exc).__name__, state.attempt_number, policy.attempts, state.upcoming_sleep,
        )
        if on_retry is not None and exc is not None:
            on_retry(exc)

    # tenacity's clock starts now, after the first try: the deadline counts from the call's start
    budget = max(0.0, policy.deadline_s - (time.monotonic() - started))
    return kind(
        stop=tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_before_delay(budget),
        wait=wait,
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )


def _retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    return policy.attempts > 1 and is_transient(exc)


def retry_call(
    fn: Callable[[], T], policy: RetryPolicy, *, who: str = "backend", on_retry: Callable[[BaseException], None] | None = None
) -> T:
    """Call ``fn``; on a transient error wait and call again, within ``policy``. The last error is raised."""
    started = time.monotonic()
    token = _deadline.set(started + policy.deadline_s)
    try:
        try:
            return fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised unless tenacity is to retry it
            if not _retryable(exc, policy):
                raise
            failed = exc
        import tenacity

        first = [failed]

        def again() -> T:  # tenacity's first try is the one that just failed: it counts, and is not rerun
            if first:
                raise first.pop()
            return fn()

        result: T = _retrying(policy, who, on_retry, tenacity.Retrying, started)(again)
        return result
    finally:
        _deadline.reset(token)


async def aretry_call(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    who: str = "backend",
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Async twin of :func:`retry_call` (waits with ``asyncio.sleep``)."""
    started = time.monotonic()
    token = _deadline.set(started + policy.deadline_s)
    try:
        try:
            return await fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised unless tenacity is to retry it
            if not _retryable(exc, policy):
                raise
            failed = exc
        import tenacity

        first = [failed]

        async def again() -> T:  # tenacity awaits only what is a coroutine function
            if first:
                raise first.pop()
            return await fn()

        result: T = await _retrying(policy, who, on_retry, tenacity.AsyncRetrying, started)(again)
        return result
    finally:
        _deadline.reset(token)
