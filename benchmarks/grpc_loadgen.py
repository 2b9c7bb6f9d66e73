"""``benchmarks/loadgen/grpc_openloop.js``: open-loop single-text ``Embed`` calls from a Node process.

No native gRPC load generator is packaged for Debian (ghz is not), so this is a short Node script
on the official ``@grpc/grpc-js`` client, installed from npm by ``benchmarks/setup_loadgen.sh``
into ``benchmarks/loadgen/node_modules``. It keeps its own clock of Poisson arrivals at a fixed
rate (true open loop, unlike wrk's per-connection gaps) and measures latency from each request's
due time, so a generator that falls behind shows up as latency.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .wrk import WrkRun, children_cpu_s

FOLDER = Path(__file__).resolve().parent / "loadgen"
SCRIPT = FOLDER / "grpc_openloop.js"


def available() -> str | None:
    """node's path when the script's modules are installed, or None."""
    node = shutil.which("node")
    return node if node and (FOLDER / "node_modules" / "@grpc" / "grpc-js").is_dir() else None


def write_texts(texts: list[str], folder: Path) -> Path:
    path = folder / "texts.json"
    path.write_text(json.dumps(texts))
    return path


def run(address: str, texts_file: Path, *, rate: float, duration_s: float, seed: int = 0,
        model: str = "hf") -> WrkRun:
    """One open-loop run at ``rate`` calls per second for ``duration_s``; errors are failed calls
    (a 10 s deadline included)."""
    node = available()
    if node is None:
        raise RuntimeError("the gRPC load generator is not installed: run benchmarks/setup_loadgen.sh")
    cpu_before = children_cpu_s()
    out = subprocess.run(
        [node, str(SCRIPT), address, f"{rate:.3f}", f"{duration_s:.3f}", str(seed), str(texts_file), model],
        capture_output=True, text=True, check=True, timeout=duration_s + 60,
    ).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("AE_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"the gRPC load generator printed no result:\n{out}")
    data = json.loads(line.split(" ", 1)[1])
    return WrkRun(data["requests"], data["duration_us"] / 1e6, data["errors"],
                  data["p50_us"] / 1e3, data["p99_us"] / 1e3, data["max_us"] / 1e3, children_cpu_s() - cpu_before)
