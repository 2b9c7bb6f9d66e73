"""``python -m benchmarks.timed_serve serve --spec ... --http ...``: ``agent-embeddings serve`` with the
model's ``encode`` timed (:mod:`benchmarks.modeltime`), for the benchmarks only: the ``hf:`` model's,
on whichever engine the spec picks (sentence-transformers, or ONNX Runtime's encoder without torch).

Every 100 ms a daemon thread writes the cumulative reading to ``$AE_MODEL_CLOCK`` (JSON, replaced
atomically); the benchmark reads it at the edges of a window. Each write costs the thread a few
hundred µs of CPU (more on a busy box): ten a second, which over a window of a few seconds is tens
of µs per request, so the reading carries the thread's own CPU and the figures leave it out.
``hf:``'s second tokenizer pass for usage counts (outside ``encode``; now only for texts its masks
missed) is timed apart too, and so are the garbage collector's pauses.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from agent_embeddings._deps import ONNX_MODULES, installed

from .modeltime import ModelClock


def _publish(clock: ModelClock, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    while True:
        clock.clock_cpu_s = time.thread_time()  # this thread's CPU so far: the instrument's, not the server's
        tmp.write_text(json.dumps({"written": time.time(), "reading": vars(clock.read())}))
        tmp.replace(path)
        time.sleep(0.1)


def main() -> int:
    from agent_embeddings.backends.hf_model import LoadedModel
    from agent_embeddings.backends.huggingface import HuggingFaceEmbeddingGenerator
    from agent_embeddings.cli import main as cli_main

    clock = ModelClock()
    clock.watch_gc()
    load = HuggingFaceEmbeddingGenerator._load

    def timed_load(self: HuggingFaceEmbeddingGenerator) -> object:
        """The loaded model's ``encode`` timed, whichever engine loaded it (sentence-transformers or
        ONNX Runtime), once per shared model; no engine is imported here that the spec does not use."""
        loaded = load(self)
        if not getattr(loaded.model, "_ae_timed", False):
            loaded.model.encode = clock.wrap(loaded.model.encode)
            loaded.model._ae_timed = True
        return loaded

    HuggingFaceEmbeddingGenerator._load = timed_load  # type: ignore[method-assign,assignment]
    if installed(*ONNX_MODULES):  # its session's intra-op pool starts with the encoder, before any encode
        from agent_embeddings.backends.onnx_encode import OnnxEncoder

        OnnxEncoder.__init__ = clock.wrap_pool(OnnxEncoder.__init__)  # type: ignore[method-assign]
    LoadedModel.token_counts = clock.wrap_aside(LoadedModel.token_counts)  # type: ignore[method-assign]
    threading.Thread(target=_publish, args=(clock, Path(os.environ["AE_MODEL_CLOCK"])), daemon=True).start()
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
