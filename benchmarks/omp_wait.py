"""How torch's OpenMP wait policy moves a server's throughput, on a quiet and on a busy host.

``python -m benchmarks.omp_wait [--burn 2] [--n 320] [--repeat 2]``: one ``serve`` process per
setting (the runtime's default, ``OMP_WAIT_POLICY=PASSIVE``, ``GOMP_SPINCOUNT=10000`` and
``100000``), each over HTTP and gRPC; 16 closed-loop single-text callers (wrk for HTTP, the Python
client for gRPC) and one caller's p50 (wrk, one connection), interleaved with raw ``st.encode``
batch 64. ``--burn N`` runs N busy-looping processes beside them: a shared or CPU-limited host.
The table in docs/servers.md ("Model threads on a shared CPU") came from ``--burn 0`` and ``--burn 2``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import wrk
from .data import short_sentences
from .harness import cpu_info
from .load import grpc_caller
from .scenarios import ROOT, _server
from .traffic import closed_loop

#: "" leaves libgomp's default (an empty value is ignored, with a warning on stderr)
SETTINGS = {
    "default": {"OMP_WAIT_POLICY": ""},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"},
    "GOMP_SPINCOUNT=100000": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "100000"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burn", type=int, default=0, help="busy-looping processes beside the servers")
    parser.add_argument("--n", type=int, default=320)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    from agent_embeddings.backends.huggingface import resolve_model_path

    texts = short_sentences(args.n)
    st = SentenceTransformer(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    print(cpu_info(), flush=True)
    results: dict[tuple[str, str], list[float]] = {}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as folder:
        script = wrk.write_script(short_sentences(500, seed=42), Path(folder))
        addresses = {}
        for name, env in SETTINGS.items():
            env = {"PYTHONPATH": str(ROOT), **env}
            addresses[name] = (stack.enter_context(_server("http", env)), stack.enter_context(_server("grpc", env)))
            wrk.run(f"http://{addresses[name][0]}/v1/embeddings", script, connections=16, duration_s=1)
            grpc_caller(addresses[name][1])(texts[0])
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burn)]
        try:
            for r in range(args.repeat):
                started = time.perf_counter()
                st.encode(texts, batch_size=64)
                results.setdefault(("raw st.encode batch 64", "texts/s"), []).append(args.n / (time.perf_counter() - started))
                for name in (list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]):
                    http, grpc = addresses[name]
                    run = wrk.run(f"http://{http}/v1/embeddings", script, connections=16, duration_s=4)
                    results.setdefault((name, "HTTP texts/s"), []).append(run.rate)
                    started = time.perf_counter()
                    closed_loop(grpc_caller(grpc), texts, 16)()
                    results.setdefault((name, "gRPC texts/s"), []).append(args.n / (time.perf_counter() - started))
                    one = wrk.run(f"http://{http}/v1/embeddings", script, connections=1, duration_s=3)
                    results.setdefault((name, "one caller p50 ms"), []).append(one.p50_ms)
        finally:
            for burner in burners:
                burner.kill()
    print(f"burners: {args.burn}; best of {args.repeat}; load average {os.getloadavg()[0]:.1f}")
    for (name, what), values in results.items():
        best = min(values) if what.endswith("ms") else max(values)
        print(f"{name:28} {what:20} {best:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
