"""The HTTP app's own time per request: ``POST /v1/embeddings`` of one sentence, called straight
through ASGI (no socket, no uvicorn) with a generator that answers at once, so that what is
measured is the app: admission, routing, parsing, the serving core, rendering, metrics. The
figure is the process's CPU time per request (worker threads included), the best round counting.

``python -m benchmarks.http_app_time`` measures this tree; ``--against DIR`` (another checkout,
e.g. ``git worktree add /tmp/ae-before main``) measures both, their rounds interleaved in
subprocesses, the best round of each counting::

    git archive main | tar -x -C /tmp/ae-before    # or: git worktree add /tmp/ae-before main
    python -m benchmarks.http_app_time --against /tmp/ae-before --rounds 7 --n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_BODY = json.dumps({"model": "instant", "input": "The quick brown fox jumps over the lazy dog."}).encode()


def _app() -> Any:
    import numpy as np

    from agent_embeddings import AbstractEmbeddingGenerator, EmbeddingGeneratorManager
    from agent_embeddings.server.config import ServerConfig
    from agent_embeddings.server.http_app import create_app

    row = np.random.default_rng(0).standard_normal(384).astype(np.float32)

    class Instant(AbstractEmbeddingGenerator):
        provider = "bench"

        def _embed_batch(self, texts: Any) -> Any:
            return np.broadcast_to(row, (len(texts), row.size))

        async def _aembed_batch(self, texts: Any, *, input_type: Any = None) -> Any:
            return self._embed_batch(texts)  # on the loop: no worker thread's wake-up in the figure

    manager = EmbeddingGeneratorManager()
    manager.register_generator("instant", Instant(normalize=True))
    return create_app(manager, ServerConfig())


async def _once(app: Any) -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/embeddings", "raw_path": b"/v1/embeddings", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # no disconnect while answering
        sent = True
        return {"type": "http.request", "body": _BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _measure(n: int) -> float:
    app = _app()
    for _ in range(200):  # warm: the middleware stack is built on the first call
        assert await _once(app) == 200
    # CPU time of the process (its worker threads included): on a shared machine, wall time
    # mostly measures the neighbours.
    started = time.process_time()
    for _ in range(n):
        await _once(app)
    return (time.process_time() - started) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_app_time", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side; the fastest counts")
    parser.add_argument("--against", type=Path, help="another checkout to measure in the same run (the baseline)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a subprocess's single round
    args = parser.parse_args(argv)
    if args.one:
        print(f"{asyncio.run(_measure(args.n)):.1f}")
        return 0
    here = Path(__file__).resolve().parent.parent
    sides = {"this tree": here, **({"baseline": args.against.resolve()} if args.against else {})}
    best: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, root in sides.items():
            env = {**os.environ, "PYTHONPATH": str(root)}  # this file, run against that tree's package
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--one", "--n", str(args.n)],
                env=env, cwd=root, check=True, capture_output=True, text=True,
            )
            best[side].append(float(out.stdout.strip().splitlines()[-1]))
    for side, values in best.items():
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"{side} ({sides[side]}): best {min(values):.1f} us CPU/request over {args.rounds} rounds ({shown})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
