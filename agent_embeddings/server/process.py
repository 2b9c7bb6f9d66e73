"""Run ``agent-embeddings serve`` in a child process and wait until it serves.

For integration tests and benchmarks that want the server exactly as deployed:

>>> with ServeProcess("specs/default.json", http="127.0.0.1:0") as served:  # doctest: +SKIP
...     print(served.addresses["http"])                                       # e.g. 127.0.0.1:41237
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["ServeProcess"]

_READY = re.compile(r"^agent-embeddings: serving (grpc|http) on (\S+)\s*$")


class ServeProcess:
    """``agent-embeddings serve`` as a child process; ``addresses`` maps kind -> bound host:port."""

    def __init__(
        self,
        spec: str | os.PathLike[str],
        *,
        grpc: str | None = None,
        http: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = 120.0,
    ) -> None:
        self.command = [sys.executable, "-m", "agent_embeddings", "serve", "--spec", str(Path(spec))]
        self.kinds = [k for k, v in (("grpc", grpc), ("http", http)) if v]
        for kind, address in (("grpc", grpc), ("http", http)):
            if address:
                self.command += [f"--{kind}", address]
        self.command += list(args)
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout_s = ready_timeout_s
        self.addresses: dict[str, str] = {}
        self._lines: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None

    @property
    def output(self) -> str:
        """Everything the server wrote to stderr so far."""
        return "".join(self._lines)

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended (negative: killed by that signal), else None."""
        return None if self._proc is None else self._proc.poll()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> ServeProcess:
        self._proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=self.env,
        )
        assert self._proc.stderr is not None
        ready = threading.Event()

        def read() -> None:  # one reader for the whole life of the process: the pipe never fills
            assert self._proc is not None and self._proc.stderr is not None
            for line in self._proc.stderr:
                self._lines.append(line)
                match = _READY.match(line)
                if match:
                    self.addresses[match.group(1)] = match.group(2)
                    if all(k in self.addresses for k in self.kinds):
                        ready.set()
            ready.set()  # exited

        self._drain = threading.Thread(target=read, daemon=True)
        self._drain.start()
        deadline = time.monotonic() + self.ready_timeout_s
        while not ready.wait(0.1):
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"server not ready after {self.ready_timeout_s}s:\n{self.output}")
        if not all(k in self.addresses for k in self.kinds):
            code = self._proc.wait(timeout=10)
            raise RuntimeError(f"server exited with {code} before serving:\n{self.output}")
        return self

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, wait for a graceful exit, return the exit status."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 60.0) -> int:
        """Wait for the process to end (after a signal already sent) and return its exit status.

        Not a second SIGTERM: one that lands after the server has removed its handlers, during the
        interpreter's teardown, ends it by the default action (-15) instead of the exit it was making.
        """
        assert self._proc is not None
        code = self._proc.wait(timeout=timeout_s)
        if self._drain is not None:
            self._drain.join(timeout=5)
        return code

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self._proc is not None and self._proc.poll() is None:
                self.terminate()
        finally:
            self.kill()
