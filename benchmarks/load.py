"""Load test of both servers: ``python -m benchmarks.load [--requests 5000] [--clients 32]``.

Starts ``agent-embeddings serve --spec specs/default.json --http 127.0.0.1:0 --grpc 127.0.0.1:0``
as a child process (as deployed), then sends ``--requests`` single-sentence requests from
``--clients`` concurrent clients to each server in turn, checks every vector against the
in-process result (each distinct sentence computed once) and prints requests, concurrency,
errors, wrong vectors, p50/p99 latency and throughput. Loopback only; bounded in count.
"""

from __future__ import annotations

import argparse
import base64
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import short_sentences
from .specs import DEFAULT_SPEC

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-5


@dataclass
class LoadResult:
    server: str
    requests: int
    clients: int
    errors: int
    wrong: int
    p50_ms: float
    p99_ms: float
    wall_s: float
    first_error: str | None = None

    @property
    def throughput(self) -> float:
        return self.requests / self.wall_s

    def line(self) -> str:
        return (f"{self.server}: {self.requests} requests, {self.clients} concurrent clients, {self.errors} errors, "
                f"{self.wrong} wrong vectors, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
                f"{self.throughput:,.0f} requests/s ({self.wall_s:.1f} s)")


def http_caller(address: str, model: str = "hf") -> Callable[[str], np.ndarray]:
    """One keep-alive httpx client per thread; base64 vectors (exact float32)."""
    import httpx

    local = threading.local()

    def call(text: str) -> np.ndarray:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=f"http://{address}", timeout=60)
        resp = client.post("/v1/embeddings", json={"model": model, "input": text, "encoding_format": "base64"})
        resp.raise_for_status()
        return np.frombuffer(base64.b64decode(resp.json()["data"][0]["embedding"]), dtype="<f4")

    return call


def grpc_caller(address: str, model: str = "hf") -> Callable[[str], np.ndarray]:
    """The raw AIOS stub over one shared channel (what any gRPC client does)."""
    import grpc

    from agent_embeddings.protocol.convert import pb
    from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(address)
    stub = pb_grpc.EmbeddingServiceStub(channel)

    def call(text: str) -> np.ndarray:
        response = stub.Embed(pb.EmbedRequest(model=model, inputs=[text]), timeout=60)
        return np.frombuffer(response.vectors, dtype="<f4").reshape(response.rows, response.cols)[0]

    return call


def run_load(server: str, call: Callable[[str], np.ndarray], texts: list[str], expected: np.ndarray,
             requests: int = 5000, clients: int = 32) -> LoadResult:
    """``requests`` calls from ``clients`` threads; request i embeds ``texts[i % len(texts)]``."""
    latencies = np.zeros(requests)
    errors, wrong = [0], [0]
    first_error: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        k = i % len(texts)
        t0 = time.perf_counter()
        try:
            vec = call(texts[k])
        except Exception as exc:  # noqa: BLE001 - counted
            with lock:
                errors[0] += 1
                first_error.append(f"{type(exc).__name__}: {exc}")
            return
        latencies[i] = time.perf_counter() - t0
        if vec.shape != expected[k].shape or np.abs(vec - expected[k]).max() > TOL:
            with lock:
                wrong[0] += 1

    for i in range(min(clients, requests)):  # warm the connections
        one(i)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    ok = latencies[latencies > 0]
    p50, p99 = (np.percentile(ok, [50, 99]) * 1000) if ok.size else (float("nan"), float("nan"))
    return LoadResult(server, requests, clients, errors[0], wrong[0], float(p50), float(p99), wall,
                      first_error[0] if first_error else None)


def expected_vectors(texts: list[str]) -> np.ndarray:
    from agent_embeddings import EmbeddingGeneratorManager

    manager = EmbeddingGeneratorManager.from_subject_spec(DEFAULT_SPEC)
    try:
        return manager.encode("hf", texts)
    finally:
        manager.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--distinct", type=int, default=500, help="distinct sentences cycled through")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from agent_embeddings.server.process import ServeProcess

    texts = short_sentences(args.distinct, seed=42)
    expected = expected_vectors(texts)
    failed = False
    with ServeProcess(DEFAULT_SPEC, http="127.0.0.1:0", grpc="127.0.0.1:0") as served:
        for kind, make in (("http", http_caller), ("grpc", grpc_caller)):
            result = run_load(kind, make(served.addresses[kind]), texts, expected, args.requests, args.clients)
            print(result.line(), flush=True)
            failed |= bool(result.errors or result.wrong)
        code = served.terminate()
    print(f"server exited with {code} after SIGTERM")
    return 1 if failed or code else 0


if __name__ == "__main__":
    raise SystemExit(main())
