"""The open-loop gRPC load generators: single-text ``Embed`` calls with Poisson arrivals, each from a
process of its own; latency counts from each call's due time, so a generator that falls behind shows
up as latency.

* ``go`` (preferred): ``benchmarks/loadgen/grpc_openloop.go`` on the official grpc-go client, built
  from Debian's ``golang-go`` and ``golang-google-grpc-dev`` by ``benchmarks/setup_loadgen.sh`` (no
  native gRPC load generator is packaged for Debian: ghz is not). It sends requests serialized here,
  by the package's own protobuf code, as raw bytes: no protobuf work of its own per call.
* ``node``: ``benchmarks/loadgen/grpc_openloop.js`` on the official ``@grpc/grpc-js`` client (npm,
  pinned by ``package-lock.json``), the generator of the earlier rounds: ~2 ms of CPU per call, on
  the cores the server uses.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

from .wrk import WrkRun, children_cpu_s

FOLDER = Path(__file__).resolve().parent / "loadgen"
SCRIPT = FOLDER / "grpc_openloop.js"
BINARY = FOLDER / "grpc_openloop"
#: what each generator is called in the rows
LABELS = {"go": "grpc-go", "node": "Node @grpc/grpc-js"}


def available(tool: str | None = None) -> str | None:
    """The generator that runs (``tool``, or the native one where built, else Node's), or None."""
    node = shutil.which("node")
    found = {
        "go": BINARY.is_file(),
        "node": bool(node) and (FOLDER / "node_modules" / "@grpc" / "grpc-js").is_dir(),
    }
    for name in ([tool] if tool else ["go", "node"]):
        if found.get(name):
            return name
    return None


def write_texts(texts: list[str], folder: Path) -> Path:
    path = folder / "texts.json"
    path.write_text(json.dumps(texts))
    for stale in folder.glob("requests-*.json"):  # serialized from the texts this replaces
        stale.unlink()
    return path


def _requests_file(texts_file: Path, model: str) -> Path:
    """The texts as serialized single-text ``EmbedRequest`` messages (base64 in a JSON list), beside
    ``texts_file``: what the native generator sends."""
    from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2 as pb

    path = texts_file.with_name(f"requests-{model}.json")
    if not path.exists():
        texts = json.loads(texts_file.read_text())
        path.write_text(json.dumps([
            base64.b64encode(pb.EmbedRequest(model=model, inputs=[t]).SerializeToString()).decode() for t in texts
        ]))
    return path


def run(address: str, texts_file: Path, *, rate: float, duration_s: float, seed: int = 0,
        model: str = "hf", tool: str | None = None) -> WrkRun:
    """One open-loop run at ``rate`` calls per second for ``duration_s`` on ``tool`` (default: the
    native generator where built); errors are failed calls (a 10 s deadline included)."""
    chosen = available(tool)
    if chosen is None:
        raise RuntimeError(f"the gRPC load generator{' ' + tool if tool else ''} is not installed: run benchmarks/setup_loadgen.sh")
    timing = [f"{rate:.3f}", f"{duration_s:.3f}", str(seed)]
    if chosen == "go":
        command = [str(BINARY), address, *timing, str(_requests_file(texts_file, model))]
    else:
        command = [str(shutil.which("node")), str(SCRIPT), address, *timing, str(texts_file), model]
    # One Go scheduler thread: the generator is all I/O, and on 2 cores Go's second one spun for work
    # beside the server (client CPU per call 655-771 vs 829-883 µs at 200/s, latency the same)
    env = {**os.environ, "GOMAXPROCS": os.environ.get("GOMAXPROCS", "1")}
    cpu_before = children_cpu_s()
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration_s + 60,
                         env=env).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("AE_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"the gRPC load generator printed no result:\n{out}")
    data = json.loads(line.split(" ", 1)[1])
    return WrkRun(data["requests"], data["duration_us"] / 1e6, data["errors"],
                  data["p50_us"] / 1e3, data["p99_us"] / 1e3, data["max_us"] / 1e3, children_cpu_s() - cpu_before)
