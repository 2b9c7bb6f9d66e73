"""Issue 24, item 1: is the model ever waiting for us, and what does a request cost outside it?

``idle``: the share of wall time the model computes nothing while 16 callers wait (in-process,
HTTP and gRPC, closed loop), and the servers' CPU per request outside the model. ``openloop``:
the same with native clients (``wrk``), and the highest arrival rate of single-sentence HTTP
requests at which p99 stays at or under 100 ms. Model time comes from :mod:`benchmarks.modeltime`
(a timing wrapper around ``encode``; in the servers through :mod:`benchmarks.timed_serve`).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from agent_embeddings._deps import ONNX_MODULES, installed

from . import wrk
from .data import short_sentences
from .harness import Row, timed
from .modeltime import ClockReading, instance_clock, read_server_clock
from .specs import DEFAULT_SPEC, spec_on
from .traffic import closed_loop

ROOT = Path(__file__).resolve().parent.parent
#: p99 latency bound of the capacity rows (issue 24)
P99_MS = 100.0
#: Mean idle gap of each wrk connection between its answer and its next request in the open-loop
#: runs: the connections are ``rate x gap``. Short beside the server's keep-alive timeout (uvicorn's
#: 5 s), which otherwise closes idle connections and counts as errors (an exponential gap of mean
#: 2.9 s, as 256 connections at 88/s had, exceeds 5 s 18% of the time: no step could pass), and
#: long beside a 100 ms answer, which slows the arrivals by latency / (gap + latency).
OPEN_GAP_S = 0.5
#: wrk's connections at the lowest and highest rates
OPEN_CONNECTIONS = (2, 1024)


def _busy_note(r: ClockReading, requests: int) -> str:
    per_call = r.pass_s / r.calls * 1e3 if r.calls else float("nan")
    wall_per = r.wall_s / r.calls * 1e3 if r.calls else float("nan")
    overlap = r.pass_s / r.wall_s if r.wall_s else float("nan")
    side = f", {overlap:.2f} passes running on average" if r.pass_s > r.busy_s * 1.01 else ""
    return (f"model busy {r.busy_s:.2f} of {r.wall_s:.2f} s wall (idle {r.idle_fraction:.1%}{side}); "
            f"{r.calls} encode calls, {r.texts / max(r.calls, 1):.1f} texts each, {per_call:.1f} ms in the model vs "
            f"{wall_per:.1f} ms wall per call; {requests} requests")


def _extra(r: ClockReading, requests: int) -> dict[str, float]:
    return {"idle_fraction": r.idle_fraction, "busy_s": r.busy_s, "pass_s": r.pass_s, "wall_s": r.wall_s,
            "encode_calls": r.calls,
            "texts_per_call": r.texts / max(r.calls, 1), "outside_us_per_request": r.outside_us_per(requests),
            "token_count_us_per_request": r.aside_us_per(requests), "loop_us_per_request": r.loop_us_per(requests),
            "model_cpu_s": r.model_cpu_s,
            "process_cpu_s": r.process_cpu_s, "instrument_cpu_s": r.clock_cpu_s, "load_avg_1m": os.getloadavg()[0]}


def _outside_note(r: ClockReading, requests: int) -> str:
    """How the CPU-per-request figure is made, with the part of it that is the backend's, not the server's."""
    return (f"process CPU {r.process_cpu_s:.2f} s - model CPU {r.model_cpu_s:.2f} s - the clock's own "
            f"{r.clock_cpu_s:.2f} s over {requests} requests; of it, hf's usage token count (a second tokenizer "
            f"pass outside encode; since the counts come from encode's masks, only for texts they miss) "
            f"{r.aside_us_per(requests):.0f} µs per request; the event "
            f"loop's thread {r.loop_us_per(requests):.0f} µs per request")


def _budget_note(run: wrk.WrkRun, r: ClockReading | None) -> str:
    """Where a request's CPU goes on a box the load generator shares: the model, the server outside
    it, and the load generator, per request, and the cores the three kept busy together."""
    client = f"load generator {run.client_us_per_request:.0f} µs"
    if r is None or not run.requests:
        return f"CPU per request: {client}"
    model_us = r.model_cpu_s / run.requests * 1e6
    cores = (r.process_cpu_s - r.clock_cpu_s + run.client_cpu_s) / r.wall_s if r.wall_s else float("nan")
    return (f"CPU per request: model {model_us:.0f} µs, server outside the model {r.outside_us_per(run.requests):.0f} "
            f"µs, {client}; together {cores:.2f} of {os.cpu_count()} cores busy; garbage collector "
            f"{r.gc_s * 1e3:.0f} ms in all, {r.gc_full} full collections")


def _busy_rows(scenario: str, variant: str, best: ClockReading, base: ClockReading, requests: int,
               target: float | None) -> Row:
    """The model's busy share of wall time, candidate vs raw batch-64 encode (busy ~100%)."""
    return Row(scenario, f"{variant}: model busy share of wall time", "%", 100 * (1 - best.idle_fraction),
               "st.encode batch (model busy)", 100 * (1 - base.idle_fraction), target=target,
               note=_busy_note(best, requests), extra=_extra(best, requests),
               spread=None)


def idle(n: int, batch: int, repeat: int, clients: int = 16) -> Iterator[Row]:
    """16 callers x 1 sentence in-process, over HTTP and over gRPC (Python clients in this process):
    the model's idle share, and each server's CPU per request outside the model."""
    from .scenarios import _manager

    manager = _manager()
    st = manager.get("hf")._model().model
    texts = short_sentences(n)
    clock = instance_clock(st)  # the generators below share this model object
    try:
        from agent_embeddings import HuggingFaceEmbeddingGenerator

        gen = HuggingFaceEmbeddingGenerator(model_name=manager.get("hf").model, batch_size=batch,
                                            backend=manager.get("hf").params.backend,  # the same model object
                                            micro_batching={"max_batch_size": 64})
        gen.generate(texts[0])

        def baseline() -> object:
            return st.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)

        best, base, spread, _ = _interleaved(clock.read, closed_loop(gen.generate, texts, clients), baseline, repeat)
        row = _busy_rows("9 idle", f"in-process, {clients} threads x 1 sentence", best, base, n, target=90.0 / 100)
        row.spread = spread
        yield row
        gen.close()
    finally:
        del st.encode  # the instance attribute; the class's encode again

    for kind in ("http", "grpc"):
        with timed_server(kind) as (address, clock_path):
            call = _python_caller(kind, address)
            call(texts[0])
            server = lambda: read_server_clock(clock_path)  # noqa: E731
            best, base, spread, runs = _interleaved(server, closed_loop(call, texts, clients), baseline, repeat)
            row = _busy_rows("9 idle", f"{kind}, {clients} Python clients x 1 sentence", best, base, n, None)
            row.spread = spread
            yield row
            limit = 150.0 if kind == "http" else 100.0
            yield Row("9 idle", f"{kind}, server CPU per single-text request outside the model (Python clients)",
                      "µs", best.outside_us_per(n), "issue 24's bound", limit, higher_is_better=False, target=1.0,
                      spread=_spread([r.outside_us_per(n) for r in runs]),
                      note=f"{_outside_note(best, n)}; the clients share the 2 cores", extra=_extra(best, n))


def _interleaved(read: Callable[[], ClockReading], candidate: Callable[[], object], baseline: Callable[[], object],
                 repeat: int) -> tuple[ClockReading, ClockReading, float, list[ClockReading]]:
    """Candidate and baseline runs interleaved; the fastest run of each, with its clock window, the
    spread of their wall times, and every candidate run (for the spread of other figures).

    The baseline is one raw ``encode`` call of all the texts: its model is busy all along (100%)."""
    cand: list[ClockReading] = []
    base: list[ClockReading] = []
    for i in range(repeat):
        order = [(candidate, cand, read), (baseline, base, None)]
        for fn, sink, reader in (order if i % 2 == 0 else order[::-1]):
            if reader is not None:
                before = reader()
                fn()
                sink.append(reader().minus(before))
            else:
                seconds = timed(fn)
                sink.append(ClockReading(seconds, seconds, 0.0, 0.0, 1, 0))
    spread = max((max(r.wall_s for r in side) - min(r.wall_s for r in side)) / min(r.wall_s for r in side)
                 for side in (cand, base))
    return min(cand, key=lambda r: r.wall_s), min(base, key=lambda r: r.wall_s), spread, cand


@contextmanager
def timed_server(kind: str, spec: Path = DEFAULT_SPEC, args: Sequence[str] = (),
                 code: Path = ROOT) -> Iterator[tuple[str, Path]]:
    """``agent-embeddings serve --<kind> [args]`` through :mod:`benchmarks.timed_serve`; yields the address
    and the file its model clock is written to. ``code``: the checkout whose package and benchmarks it
    runs (another commit's worktree: its before, in the same run)."""
    from agent_embeddings.server.process import ServeProcess

    with tempfile.TemporaryDirectory(prefix="ae-clock-") as folder:
        clock_path = Path(folder) / "clock.json"
        env = {"AE_MODEL_CLOCK": str(clock_path), "PYTHONPATH": os.pathsep.join(
            p for p in (str(code), os.environ.get("PYTHONPATH")) if p)}
        served = ServeProcess(spec, env=env, args=list(args), **{kind: "127.0.0.1:0"})
        served.command[1:3] = ["-m", "benchmarks.timed_serve"]  # same arguments, the encode timed
        with served:
            yield served.addresses[kind], clock_path


def _python_caller(kind: str, address: str) -> Callable[[str], object]:
    from .load import grpc_caller, http_caller

    return http_caller(address) if kind == "http" else grpc_caller(address)


def openloop(n: int, batch: int, repeat: int, clients: int = 16) -> Iterator[Row]:
    """HTTP with native clients (wrk): 16 closed-loop connections x 1 sentence (model idle share, CPU
    per request outside the model), and the open-loop capacity at p99 <= 100 ms against raw
    ``st.encode`` batch 64 in the same run. Nothing when wrk is not installed."""
    if wrk.available() is None:
        print("   openloop: skipped, wrk is not installed (benchmarks/setup_loadgen.sh installs it)",
              file=sys.stderr, flush=True)
        return
    from .scenarios import _manager

    manager = _manager()
    st = manager.get("hf")._model().model
    texts = short_sentences(n)

    def baseline() -> object:
        return st.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)

    base_s: list[float] = [timed(baseline)]
    # about n requests per closed-loop run at half the raw rate; at least 5 s, so the clock's
    # ~100 ms edges and the requests in flight at them stay small beside the window
    seconds = max(5.0, min(30.0, 2 * min(base_s)))
    with wrk.scratch() as folder, timed_server("http") as (address, clock_path):
        script = wrk.write_script(short_sentences(500, seed=42), Path(folder))
        url = f"http://{address}/v1/embeddings"
        wrk.run(url, script, connections=clients, duration_s=1)  # warm the connections and the model

        def windowed(**kwargs: float) -> tuple[wrk.WrkRun, ClockReading]:
            before = read_server_clock(clock_path)
            result = wrk.run(url, script, **kwargs)  # type: ignore[arg-type]
            return result, read_server_clock(clock_path).minus(before)

        closed: list[tuple[wrk.WrkRun, ClockReading]] = []
        for _ in range(repeat):
            closed.append(windowed(connections=clients, duration_s=seconds))
            base_s.append(timed(baseline))
        run, reading = max(closed, key=lambda c: c[0].rate)
        raw = n / min(base_s)
        yield Row("10 openloop", f"http, {clients} wrk connections x 1 sentence (closed loop)", "texts/s", run.rate,
                  "st.encode batch", raw, spread=_spread([c[0].rate for c in closed]),
                  note=f"{_busy_note(reading, run.requests)}; p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, "
                       f"{run.errors} errors (timeouts and non-2xx; a timed-out request has no latency)",
                  extra={**_extra(reading, run.requests), "p50_ms": run.p50_ms, "p99_ms": run.p99_ms})
        yield Row("10 openloop", "http, server CPU per single-text request outside the model (wrk, closed loop)",
                  "µs", reading.outside_us_per(run.requests), "issue 24's bound", 150.0, higher_is_better=False,
                  target=1.0, spread=_spread([r.outside_us_per(w.requests) for w, r in closed]),
                  note=_outside_note(reading, run.requests), extra=_extra(reading, run.requests))

    yield from _capacities(n, batch, repeat, baseline, base_s)


Stepper = Callable[[float, float, int], tuple[wrk.WrkRun, ClockReading | None]]


def wrk_step(url: str, script: Path, clock: Path | None, rate: float, duration: float,
             seed: int) -> tuple[wrk.WrkRun, ClockReading | None]:
    """One open-loop step against an HTTP server: ``rate`` requests/s of Poisson arrivals for
    ``duration`` seconds (wrk's connections each wait an exponential gap, mean ~0.5 s), with the
    server's model clock read around it when it has one."""
    connections = min(max(math.ceil(rate * OPEN_GAP_S), OPEN_CONNECTIONS[0]), OPEN_CONNECTIONS[1])
    gap_ms = max(1.0, connections / rate * 1000 - 15)  # ~15 ms: the answer's own time
    before = read_server_clock(clock) if clock else None
    run = wrk.run(url, script, connections=connections, duration_s=duration, gap_ms=gap_ms, seed=seed)
    return run, (read_server_clock(clock).minus(before) if clock and before else None)


def _capacities(n: int, batch: int, repeat: int, baseline: Callable[[], object], base_s: list[float]) -> Iterator[Row]:
    """Open-loop capacity at p99 <= 100 ms: our HTTP server (wrk), our gRPC server (the Node
    generator) and infinity-emb's HTTP server (wrk; when ``.venv-peer`` exists), their searches
    interleaved with each other and with the raw baseline, all servers up at once (an idle server
    costs nothing)."""
    from contextlib import ExitStack

    from . import grpc_loadgen
    from .peers import PEER_NAME, PEER_VENV, _peer_server

    texts = short_sentences(500, seed=42)
    steppers: dict[str, Stepper] = {}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(wrk.scratch()))

        def wrk_stepper(url: str, script: Path, clock: Path | None) -> Stepper:
            return functools.partial(wrk_step, url, script, clock)

        def grpc_stepper(address: str, clock: Path, tool: str | None) -> Stepper:
            def step(rate: float, duration: float, seed: int) -> tuple[wrk.WrkRun, ClockReading | None]:
                before = read_server_clock(clock)
                run = grpc_loadgen.run(address, texts_file, rate=rate, duration_s=duration, seed=seed, tool=tool)
                return run, read_server_clock(clock).minus(before)
            return step

        http_script = wrk.write_script(texts, folder)
        texts_file = grpc_loadgen.write_texts(texts, folder)
        # Our servers on the default spec, and on it with backend onnx (ONNX Runtime fp32, the same
        # space) where the onnx extra is installed: the same names with ", backend onnx (fp32)".
        # ONNX Runtime on one stream too: the before of the streams (each pass on all the cores)
        onnx_specs = {ONNX_SUFFIX: spec_on("onnx"), ONNX_SUFFIX + ", 1 stream": spec_on("onnx", streams=1)}
        specs = {"": DEFAULT_SPEC} | (onnx_specs if installed(*ONNX_MODULES) else {})
        grpc_tool = grpc_loadgen.available()
        tools: dict[str, str] = {}  # the load generator of each gRPC row
        if not grpc_tool:
            print("   openloop: gRPC rows skipped, benchmarks/setup_loadgen.sh installs their load generator",
                  file=sys.stderr, flush=True)
        for suffix, spec in specs.items():
            http_address, http_clock = stack.enter_context(timed_server("http", spec))
            http_url = f"http://{http_address}/v1/embeddings"
            wrk.run(http_url, http_script, connections=16, duration_s=1)  # warm the connections and the model
            steppers["http" + suffix] = wrk_stepper(http_url, http_script, http_clock)
            if grpc_tool:
                grpc_address, grpc_clock = stack.enter_context(timed_server("grpc", spec))
                grpc_loadgen.run(grpc_address, texts_file, rate=20, duration_s=1)  # warm
                steppers["grpc" + suffix] = grpc_stepper(grpc_address, grpc_clock, grpc_tool)
                tools["grpc" + suffix] = grpc_loadgen.LABELS[grpc_tool]
                if suffix == ONNX_SUFFIX and grpc_tool == "go" and grpc_loadgen.available("node"):
                    # the same server under the generator of the earlier rounds: what the generator costs
                    steppers[f"grpc{suffix}, {NODE_SUFFIX}"] = grpc_stepper(grpc_address, grpc_clock, "node")
                    tools[f"grpc{suffix}, {NODE_SUFFIX}"] = grpc_loadgen.LABELS["node"]
        if (PEER_VENV / "bin" / "infinity_emb").exists():
            from agent_embeddings.backends.huggingface import resolve_model_path

            from .peers import MODEL

            peer_url = stack.enter_context(_peer_server(resolve_model_path(MODEL), batch)) + "/embeddings"
            peer_folder = folder / "peer"
            peer_folder.mkdir()
            peer_script = wrk.write_script(texts, peer_folder, model="peer")
            wrk.run(peer_url, peer_script, connections=16, duration_s=1)
            steppers[PEER_NAME] = wrk_stepper(peer_url, peer_script, None)

        searches: dict[str, list[Search]] = {name: [] for name in steppers}
        for i in range(repeat):
            for name, stepper in (steppers.items() if i % 2 == 0 else reversed(steppers.items())):
                searches[name].append(_capacity(stepper, start=0.3 * n / min(base_s), seed=i, scale=min(1.0, n / 400)))
                base_s.append(timed(baseline))
    raw = n / min(base_s)
    best: dict[str, wrk.WrkRun] = {}
    for name, found_all in searches.items():
        found = [(w, c, st) for w, c, st in found_all if w is not None]
        if not found:  # say what each step measured: a search that finds nothing is itself a finding
            for _, _, steps in found_all:
                print(f"   openloop: {name}: no rate passed; steps (offered/s: p99 ms, errors) "
                      + ", ".join(f"{r:.0f}: {p99:.0f}, {e}" for r, p99, e in steps), file=sys.stderr, flush=True)
            continue
        run, reading, steps = max(found, key=lambda s: s[0].rate)
        best[name] = run
        ours = name != PEER_NAME
        tool = tools.get(name, "wrk")
        label = f"{name} open-loop capacity at p99 <= {P99_MS:.0f} ms ({tool}, Poisson arrivals)"
        yield Row("10 openloop", label, "requests/s", run.rate, "st.encode batch", raw,
                  target={"http": 0.75, "grpc": 0.80}.get(name.split(",")[0]),
                  spread=_spread([s[0].rate for s in found]),
                  note=f"highest passing rate {run.rate:.0f}/s: p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, "
                       f"{run.errors} errors" + (f", {_busy_note(reading, run.requests)}" if reading else "")
                       + f"; {_budget_note(run, reading)}; steps (offered/s: p99 ms) "
                       + ", ".join(f"{s[0]:.0f}: {s[1]:.0f}" for s in steps),
                  extra={**(_extra(reading, run.requests) if reading else {}), "p50_ms": run.p50_ms,
                         "p99_ms": run.p99_ms, "client_us_per_request": run.client_us_per_request,
                         "steps": steps})
        if ours and reading is not None:
            yield Row("10 openloop", f"{name}, server CPU per single-text request outside the model (at capacity)",
                      "µs", reading.outside_us_per(run.requests), "issue 24's bound",
                      150.0 if name.startswith("http") else 100.0,
                      higher_is_better=False, target=1.0,
                      spread=_spread([r.outside_us_per(w.requests) for w, r, _ in found if r is not None]),
                      note=_outside_note(reading, run.requests), extra=_extra(reading, run.requests))
    if "http" in best and PEER_NAME in best:
        yield Row("10 openloop", f"http open-loop capacity at p99 <= {P99_MS:.0f} ms, against {PEER_NAME}'s",
                  "requests/s", best["http"].rate, f"{PEER_NAME}", best[PEER_NAME].rate, target=2.0,
                  note="both measured with wrk, Poisson arrivals, the same texts, searches interleaved")


Search = tuple[wrk.WrkRun | None, ClockReading | None, list[tuple[float, float, int]]]

#: the name of a server of the default spec with ``backend: onnx``, after "http"/"grpc" (its clock
#: times ONNX Runtime's encode)
ONNX_SUFFIX = ", backend onnx (fp32)"
#: a gRPC row's server measured with the Node generator beside the native one (the same server)
NODE_SUFFIX = "Node generator"


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / min(values) if values and min(values) > 0 else 0.0


def _capacity(stepper: Stepper, start: float, seed: int, scale: float = 1.0) -> Search:
    """The highest rate that passes (p99 <= 100 ms, no errors, the offered rate served): up by 1.25x
    from ``start`` until a step fails, then two halvings of the last interval. Each step runs 4-10 s
    (about 1,500 requests) times ``scale``: a smoke run's tiny input scales it down to 1 s."""

    def step(rate: float) -> tuple[bool, wrk.WrkRun, ClockReading | None]:
        run, reading = stepper(rate, max(1.0, scale * max(4.0, min(10.0, 1500 / rate))), seed)
        steps.append((rate, run.p99_ms, run.errors))
        return run.p99_ms <= P99_MS and run.errors == 0 and run.rate >= 0.85 * rate, run, reading

    steps: list[tuple[float, float, int]] = []
    passed: tuple[wrk.WrkRun, ClockReading | None] | None = None
    low, high, rate = 0.0, None, start
    while high is None and rate < 20 * start:  # up until a step fails
        ok, run, reading = step(rate)
        if ok:
            passed, low, rate = (run, reading), rate, rate * 1.25
        else:
            high = rate
    while passed is None and high is not None and high > start / 16:  # the first step failed: down
        high /= 2
        ok, run, reading = step(high)
        if ok:
            passed, low, high = (run, reading), high, high * 2
    for _ in range(2 if passed is not None and high is not None else 0):  # two halvings of the last interval
        mid = (low + high) / 2  # type: ignore[operator]
        ok, run, reading = step(mid)
        if ok:
            passed, low = (run, reading), mid
        else:
            high = mid
    return (None, None, steps) if passed is None else (passed[0], passed[1], steps)

