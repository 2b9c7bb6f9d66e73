"""Scenario 11 (issue 24): the stack's floor — what a request costs uvicorn and grpc before our code.

Issue 24 bounds our server's CPU per single-text request outside the model (150 µs HTTP, 100 µs
gRPC). Our servers run on uvicorn (httptools, uvloop) and on ``grpc.aio``: this measures what those
stacks take per request with nothing of ours in them (:mod:`benchmarks.floor_servers`: a bare app
answering a stored vector of our answer's size), at the same open-loop rate and with the same load
generators as our servers (wrk with Poisson gaps; the native gRPC generator), rounds interleaved,
best of N. A server's CPU is its process CPU clock (nanoseconds, every thread, ended ones too:
:func:`~benchmarks.modeltime.process_cpu_s`); ours is read from its model clock
(:mod:`benchmarks.timed_serve`), outside the model.

The rows: each floor against the issue's bound (the bound can only be met on a stack whose floor is
under it), and our servers' CPU outside the model against the floor of their stack (the rest is ours).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from . import grpc_loadgen, wrk
from .data import short_sentences
from .harness import Row
from .idle import _spread, timed_server, wrk_step
from .modeltime import main_thread_cpu_s, process_cpu_s, read_server_clock
from .specs import spec_on

ROOT = Path(__file__).resolve().parent.parent
#: requests per second offered to every server: under our servers' capacity on 2 cores (HTTP ~150/s,
#: gRPC ~90-115/s), so that every server serves all of it and the per-request figures compare
RATE = 80.0
SECONDS = 8.0
BOUND_US = {"http": 150.0, "grpc": 100.0}
STACKS = {
    "asgi": ("http", "uvicorn (httptools, uvloop) + a bare ASGI app"),
    "asgi-hop": ("http", "the same, each request handed to a worker thread and back"),
    "grpc-aio": ("grpc", "grpc.aio + a bare handler"),
    "grpc-sync": ("grpc", "grpc's thread-pool server + a bare handler"),
}


def _outside_cpu_s(clock: Path) -> tuple[float, float]:
    """Our server's CPU outside the model so far, and its event loop's, from its model clock."""
    reading = read_server_clock(clock)
    return reading.outside_cpu_s, reading.loop_cpu_s


def _process_cpu_s(pid: int) -> tuple[float, float]:
    """A floor server's CPU so far, and its main thread's (the event loop; grpc's thread-pool server
    answers on its pool's threads, so there it is the idle main thread)."""
    return process_cpu_s(pid), main_thread_cpu_s(pid)


@contextmanager
def _floor_server(kind: str) -> Iterator[tuple[str, int]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.floor_servers", kind], stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"floor server {kind} did not start (exit status {process.poll()})")
        yield f"127.0.0.1:{int(line.split()[1])}", process.pid
    finally:
        process.kill()
        process.wait(timeout=30)


def floor(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """Every stack and our two servers at :data:`RATE`, ``repeat`` interleaved rounds: CPU per request."""
    if not wrk.available() or grpc_loadgen.available("go") is None:
        print("   floor: skipped, it needs wrk and the native gRPC generator (make loadgen)", file=sys.stderr, flush=True)
        return
    texts = short_sentences(500, seed=42)
    seconds = SECONDS * min(1.0, n / 400)
    # name -> (seed -> CPU s, the event loop's CPU s, requests)
    steps: dict[str, Callable[[int], tuple[float, float, int]]] = {}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(wrk.scratch()))
        script = wrk.write_script(texts, folder)
        texts_file = grpc_loadgen.write_texts(texts, folder)

        def http_step(url: str, cpu: Callable[[], tuple[float, float]]) -> Callable[[int], tuple[float, float, int]]:
            def step(seed: int) -> tuple[float, float, int]:
                before = cpu()
                run, _ = wrk_step(url, script, None, RATE, seconds, seed)
                return *_minus(cpu(), before), _served(run, url)
            return step

        def grpc_step(address: str, cpu: Callable[[], tuple[float, float]]) -> Callable[[int], tuple[float, float, int]]:
            def step(seed: int) -> tuple[float, float, int]:
                before = cpu()
                run = grpc_loadgen.run(address, texts_file, rate=RATE, duration_s=seconds, seed=seed, tool="go")
                return *_minus(cpu(), before), _served(run, address)
            return step

        for kind, (transport, _) in STACKS.items():
            address, pid = stack.enter_context(_floor_server(kind))
            cpu = functools.partial(_process_cpu_s, pid)
            steps[kind] = (http_step(f"http://{address}/v1/embeddings", cpu) if transport == "http"
                           else grpc_step(address, cpu))
        for transport in ("http", "grpc"):  # ours: CPU outside the model, from the server's clock
            address, clock = stack.enter_context(timed_server(transport, spec_on("onnx")))
            outside = functools.partial(_outside_cpu_s, clock)
            steps[f"ours-{transport}"] = (http_step(f"http://{address}/v1/embeddings", outside) if transport == "http"
                                          else grpc_step(address, outside))
        for step in steps.values():  # warm: connections, the model, the first calls' imports
            step(99)
        per: dict[str, list[float]] = {name: [] for name in steps}
        loop: dict[str, list[float]] = {name: [] for name in steps}
        for i in range(repeat):
            for name, step in (list(steps.items()) if i % 2 == 0 else list(reversed(steps.items()))):
                cpu_s, loop_s, requests = step(i)
                per[name].append(cpu_s / requests * 1e6)
                loop[name].append(loop_s / requests * 1e6)
    best = {name: min(values) for name, values in per.items()}
    # the event loop's CPU in the round of the best whole-process figure: one round's split
    best_loop = {name: loop[name][per[name].index(best[name])] for name in per}
    where = f"at {RATE:.0f} requests/s, Poisson arrivals, {repeat} interleaved rounds"
    for kind, (transport, stack_name) in STACKS.items():
        yield Row("11 floor", f"{transport} floor: {stack_name}, CPU per request", "µs", best[kind],
                  "issue 24's bound", BOUND_US[transport], higher_is_better=False, target=1.0,
                  spread=_spread(per[kind]), note=f"{where}; the whole process's CPU, {best_loop[kind]:.0f} µs of it "
                  "on the main thread; " + ("wrk" if transport == "http" else "grpc-go") + "; rounds (µs) "
                  + _list(per[kind]))
    for transport, kind in (("http", "asgi"), ("grpc", "grpc-aio")):
        ours = best[f"ours-{transport}"]
        yield Row("11 floor", f"{transport}, our server (ONNX Runtime) outside the model, CPU per request", "µs", ours,
                  f"the floor of its stack ({kind})", best[kind], higher_is_better=False,
                  spread=_spread(per[f"ours-{transport}"]),
                  note=f"{where}; ours less the floor: {ours - best[kind]:.0f} µs per request, our code's share; "
                       f"rounds (µs) {_list(per[f'ours-{transport}'])}")
        # where our share runs: the event loop's thread carries the request handling of both stacks
        ours_loop, floor_loop = best_loop[f"ours-{transport}"], best_loop[kind]
        yield Row("11 floor", f"{transport}, our server's event loop thread, CPU per request", "µs", ours_loop,
                  f"the event loop thread of its stack ({kind})", floor_loop, higher_is_better=False,
                  note=f"{where}; in the rounds of the rows above; ours less the floor on the loop: "
                       f"{ours_loop - floor_loop:.0f} µs per request, of {ours - best[kind]:.0f} µs in the whole process")


def _minus(after: tuple[float, float], before: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


def _served(run: wrk.WrkRun, where: str) -> int:
    if run.errors or not run.requests:
        raise RuntimeError(f"{where}: {run.errors} errors, {run.requests} answers at {RATE:.0f}/s")
    return run.requests


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)
