"""Traffic shapes for the batching scenarios: closed-loop callers and open-loop (Poisson) arrivals,
and the OpenAI-style HTTP caller the server scenarios send them through."""

from __future__ import annotations

import base64
import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


def poster(base_url: str, model: str, route: str = "/v1/embeddings", timeout_s: float = 60) -> Callable[[object], list]:
    """``POST route`` of ``{"model", "input", "encoding_format": "base64"}``, the rows decoded as float32:
    a keep-alive httpx client per calling thread (closed-loop callers each keep their own connection)."""
    import httpx
    import numpy as np

    local = threading.local()

    def post(inputs: object) -> list:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=base_url, timeout=timeout_s)
        resp = client.post(route, json={"model": model, "input": inputs, "encoding_format": "base64"})
        resp.raise_for_status()
        return [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in resp.json()["data"]]

    return post


def closed_loop(call: Callable[[str], object], texts: list[str], clients: int) -> Callable[[], object]:
    """``clients`` threads, each sending one text per call and the next as soon as it is answered."""

    def run() -> None:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            for _ in pool.map(call, texts):
                pass

    return run


@dataclass
class OpenLoopRun:
    """What an open-loop run saw: latencies from each call's scheduled arrival, and the wall time."""

    latencies_ms: list[float]
    wall_s: float

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.wall_s

    def percentile(self, q: float) -> float:
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]


def open_loop(call: Callable[[str], object], texts: list[str], rate: float, seed: int = 0,
              workers: int = 128) -> OpenLoopRun:
    """Calls arriving as a Poisson process of ``rate`` per second, whatever the answers do.

    Latency counts from the scheduled arrival, not from when a thread got to it (no coordinated
    omission); ``workers`` threads are plenty for arrivals that the server keeps up with.
    """
    rng = random.Random(seed)
    gaps = [rng.expovariate(rate) for _ in texts]
    latencies = [0.0] * len(texts)
    lock = threading.Lock()

    def one(i: int, due: float) -> None:
        call(texts[i])
        done = time.perf_counter()
        with lock:
            latencies[i] = (done - due) * 1000

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        due = start
        for i, gap in enumerate(gaps):
            due += gap
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i, due)
    return OpenLoopRun(latencies, time.perf_counter() - start)
