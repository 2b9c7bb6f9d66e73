"""How far a long job is: a tqdm bar on a terminal, a log line every ``every_s`` seconds elsewhere.

Under ``nohup``, cron or CI there is no terminal to draw a bar on, and a job that prints
nothing for minutes looks hung: there the same counts go to the ``agent_embeddings.<label>``
logger (the CLI sends our loggers to stderr), with the rate and the time left.

>>> ticks = iter([0.0, 40.0])
>>> p = Progress(1000, show=None, every_s=30, label="bulk", clock=lambda: next(ticks), tty=False)
>>> p.line(250, 40.0)
'250/1,000 rows (25%), 6 rows/s, ETA 2m00s'
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

__all__ = ["DEFAULT_LOG_EVERY_S", "Progress", "format_duration"]

#: Seconds between two log lines when stderr is not a terminal (``--log-every``).
DEFAULT_LOG_EVERY_S = 30.0


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: a length of time as a person reads it.

    >>> format_duration(42.4), format_duration(185), format_duration(3725)
    ('42s', '3m05s', '1h02m')
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Counts done out of ``total``: a tqdm bar (rate, ETA) when ``show`` is True, or None on a
    terminal; one INFO line every ``every_s`` seconds (done, total, rate, ETA) when ``show`` is None
    or True and stderr is not a terminal; nothing when ``show`` is False.

    ``clock`` and ``tty`` are for tests.
    """

    def __init__(
        self,
        total: int | None,
        done: int = 0,
        *,
        show: bool | None,
        every_s: float = DEFAULT_LOG_EVERY_S,
        unit: str = "row",
        label: str = "bulk",
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
    ) -> None:
        tty = sys.stderr.isatty() if tty is None else tty
        self._bar = None
        if tty if show is None else show:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=done, unit=unit, file=sys.stderr, dynamic_ncols=True, smoothing=0.05,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} " + unit + "s [{elapsed}<{remaining}, {rate_fmt}]",
            )
        self._log = show is not False and not tty
        self._logger = logging.getLogger(f"agent_embeddings.{label}")
        self._every, self._total, self._done = every_s, total, done
        self._unit, self._label, self._clock = unit, label, clock
        self._start = self._last = clock()
        self._at_start = done
        if self._log:
            self._logger.info("started: %s", self._count(done))

    def _count(self, done: int) -> str:
        if self._total is None:
            return f"{done:,} {self._unit}s"
        share = f" ({min(done / self._total, 1.0):.0%})" if self._total else ""
        return f"{done:,}/{self._total:,} {self._unit}s{share}"

    def line(self, done: int, now: float) -> str:
        """The log line for ``done`` at clock time ``now``."""
        elapsed = max(now - self._start, 1e-9)
        rate = (done - self._at_start) / elapsed
        text = f"{self._count(done)}, {rate:,.0f} {self._unit}s/s"
        if self._total is not None and rate > 0:
            left = max(self._total - done, 0) / rate
            text += f", ETA {format_duration(left)}"
        return text

    def update(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)
        self._done += count
        if self._log:
            now = self._clock()
            if now - self._last >= self._every:
                self._last = now
                self._logger.info("%s", self.line(self._done, now))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
