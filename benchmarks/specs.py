"""The spec the benchmarks measure: ``specs/default.json`` with its ``hf:`` item on a named engine.

The default spec says ``backend: "auto"`` (ONNX Runtime on a CPU where the onnx extra is installed,
torch elsewhere). The benchmarks compare our paths with raw sentence-transformers (``st.encode``,
torch), so :data:`DEFAULT_SPEC` pins ``torch``, like for like; the rows that measure ONNX Runtime
use :func:`spec_on` ``("onnx")`` and say so in their names. Only the smoke test, whose figures mean
nothing, changes the engine (:data:`BACKEND`).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SPEC = ROOT / "specs" / "default.json"


@cache
def spec_on(backend: str, streams: int | None = None) -> Path:
    """``specs/default.json`` with ``backend`` (and ``streams``, if given) on its ``hf:`` items, written
    once per process into a folder removed at exit (servers started from it read it while the
    benchmarks run)."""
    spec = json.loads(SHIPPED_SPEC.read_text())
    for item in spec["models"]:
        if item["llm_block_id"].startswith("hf:"):
            item.setdefault("llm_parameters", {})["backend"] = backend
            if streams is not None:
                item["llm_parameters"]["streams"] = streams
    folder = Path(tempfile.mkdtemp(prefix="ae-bench-spec-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / f"default-{backend}{'' if streams is None else f'-{streams}'}.json"
    path.write_text(json.dumps(spec))
    return path


#: the engine of :data:`DEFAULT_SPEC`: torch unless ``AGENT_EMBEDDINGS_BENCH_BACKEND`` names another
#: (the smoke test runs the scenarios on ``onnx``: its servers and Ray actors start without importing
#: torch); the run's metadata records it
BACKEND = os.environ.get("AGENT_EMBEDDINGS_BENCH_BACKEND", "torch")
#: the default spec on :data:`BACKEND`: what every row not labelled onnx measures
DEFAULT_SPEC = spec_on(BACKEND)
