"""The event loop ``serve`` runs both servers on (``serve --loop``), apart from the runner so that
the HTTP server's own thread (:func:`.http.serve_in_thread`) picks the same loop without importing it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LOOPS", "loop_factory", "run"]

T = TypeVar("T")

#: ``serve --loop``: ``auto`` is uvloop where it is installed (the ``server`` extra brings it on
#: Linux and macOS), else asyncio's own loop.
LOOPS = ("auto", "asyncio", "uvloop")


def loop_factory(loop: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the servers run on (None: asyncio's default).

    uvloop's loop, transports and timers are C: per request it saved 30% (HTTP) and 20% (gRPC)
    of the CPU the servers spend outside the model (benchmarks/idle.py), and grpc.aio runs on it
    (its poller thread wakes the loop through a socket, whatever the loop). The HTTP and gRPC
    servers share the one loop.
    """
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, not {loop!r}")
    if loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            from .._deps import require

            require("uvloop", "server", who="serve --loop uvloop")
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` picks (``asyncio.Runner``: Python 3.11 too)."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)
