"""``python -m benchmarks.timed_serve serve --spec ... --http ...``: ``agent-embeddings serve`` with the
model's ``encode`` timed (:mod:`benchmarks.modeltime`), for the benchmarks only.

Every 100 ms a daemon thread writes the cumulative reading to ``$AE_MODEL_CLOCK`` (JSON, replaced
atomically); the benchmark reads it at the edges of a window. The thread wakes ten times a second,
a few µs each: noise next to the figures it serves.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from .modeltime import ModelClock


def _publish(clock: ModelClock, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    while True:
        tmp.write_text(json.dumps({"written": time.time(), "reading": asdict(clock.read())}))
        tmp.replace(path)
        time.sleep(0.1)


def main() -> int:
    from sentence_transformers import SentenceTransformer

    from agent_embeddings.cli import main as cli_main

    clock = ModelClock()
    SentenceTransformer.encode = clock.wrap(SentenceTransformer.encode)  # type: ignore[method-assign]
    threading.Thread(target=_publish, args=(clock, Path(os.environ["AE_MODEL_CLOCK"])), daemon=True).start()
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
