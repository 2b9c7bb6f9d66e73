"""Our HTTP server in variants at fixed open-loop rates: p50/p99 and CPU per request, interleaved.

The capacity search (scenario 10) finds one rate per server and moves by a quarter between runs;
to tell two settings of one server apart, this runs each variant at the same rates, round after
round, and prints every step, so that medians over rounds can be read::

    python -m benchmarks.fixed_rate --rate 170 --rounds 5 \\
        --variant "5ms=--switch-interval 5" --variant "1ms=--switch-interval 1"

A variant is ``NAME=serve arguments``, or ``NAME@CHECKOUT=serve arguments`` to run another
checkout's code (``git worktree add /tmp/before HEAD~1``: a change's before and after in one run);
every variant serves the default spec on ONNX Runtime fp32 (``--backend`` changes it) through
:mod:`benchmarks.timed_serve`, with wrk's Poisson arrivals as in the capacity search (needs
``make loadgen``)."""

from __future__ import annotations

import argparse
import shlex
import statistics
from contextlib import ExitStack
from pathlib import Path

from . import wrk
from .data import short_sentences
from .idle import ROOT, _budget_note, _busy_note, timed_server, wrk_step
from .specs import spec_on


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fixed_rate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=ARGS",
                        help="a server: a name, '=', its serve arguments (repeat for each)")
    parser.add_argument("--rate", action="append", type=float, required=True, metavar="PER_S",
                        help="requests per second offered (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="each step's length")
    parser.add_argument("--backend", default="onnx")
    args = parser.parse_args(argv)
    texts = short_sentences(500, seed=42)
    p50s: dict[tuple[str, float], list[float]] = {}
    p99s: dict[tuple[str, float], list[float]] = {}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(wrk.scratch()))
        script = wrk.write_script(texts, folder)
        servers = {}
        for variant in args.variant:
            name, _, serve_args = variant.partition("=")
            name, _, checkout = name.partition("@")
            address, clock = stack.enter_context(timed_server(
                "http", spec_on(args.backend), shlex.split(serve_args), code=Path(checkout) if checkout else ROOT))
            url = f"http://{address}/v1/embeddings"
            wrk.run(url, script, connections=16, duration_s=1)  # warm the connections and the model
            servers[name] = (url, clock)
        for i in range(args.rounds):
            for rate in args.rate:
                for name, (url, clock) in (list(servers.items()) if i % 2 == 0 else list(reversed(servers.items()))):
                    run, reading = wrk_step(url, script, clock, rate, args.seconds, i)  # as the search's steps
                    assert reading is not None  # our servers have a clock
                    p50s.setdefault((name, rate), []).append(run.p50_ms)
                    p99s.setdefault((name, rate), []).append(run.p99_ms)
                    print(f"round {i + 1} {name} at {rate:g}/s: served {run.rate:.0f}/s, p50 {run.p50_ms:.0f} ms, "
                          f"p99 {run.p99_ms:.0f} ms, {run.errors} errors; {_busy_note(reading, run.requests)}; "
                          f"{_budget_note(run, reading)}", flush=True)
    for (name, rate), values in p99s.items():
        print(f"{name} at {rate:g}/s over {len(values)} rounds: median p50 {statistics.median(p50s[name, rate]):.0f} ms, "
              f"median p99 {statistics.median(values):.0f} ms (p99s: {', '.join(f'{v:.0f}' for v in values)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
