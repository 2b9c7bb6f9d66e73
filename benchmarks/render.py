"""Render ``benchmarks/README.md`` (and ``results/latest.md``) from ``results/latest.json``.

    python -m benchmarks.render           # write them
    python -m benchmarks.render --check   # exit 1 if the committed README differs (a test runs this)

The figures live in one place, the JSON a run writes; the tables are made from it, never typed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LATEST = HERE / "results" / "latest.json"
README = HERE / "README.md"

INTRO = """\
# Benchmark results

Rendered by `python -m benchmarks.render` from `results/latest.json`, which `make bench`
writes; do not edit by hand. How the figures are measured and what limits them:
[docs/performance.md](../docs/performance.md).

Every figure is a ratio against a baseline measured in the same run, the runs of both sides
interleaved; the estimator is the {estimator} of {repeat} runs per side, and "spread" is
(slowest - fastest) / fastest over those runs, where the run recorded it.
"""


#: The pictures ``python -m benchmarks.plots`` draws (files under results/) and what each shows.
PLOTS = {
    "throughput.png": "Throughput of each path (in-process, HTTP, gRPC, the peer server) for 16 concurrent "
                      "single-text callers and for one caller sending batches, against the raw model",
    "latency.png": "Latency percentiles against offered load (open loop, Poisson arrivals): batches filled to "
                   "the callers (the default) and the plain 2 ms window",
    "int8.png": "ONNX Runtime int8 and fp32: speed against accuracy, relative to fp32 torch",
    "bulk/bulk.png": "Bulk embedding: throughput of the engines, and peak memory against corpus size",
    "adapters/adapters.png": "The LlamaIndex and LangChain adapters against manager.encode on mixed-length texts",
    "openloop/openloop.png": "Open-loop p99 against offered load: our HTTP and gRPC servers on torch and on ONNX "
                             "Runtime fp32, and infinity-emb, each stepped by the capacity search",
}
#: The other runs' tables (scenarios run on their own, with --out results/<name>).
OTHER_TABLES = {
    "bulk": "bulk: the local engine, length sorting, Ray, memory",
    "bulk-memory": "bulk: peak memory against corpus size (a later run)",
    "bulk-cluster": "bulk on a two-node Ray cluster, and one actor's memory",
    "adapters": "the LangChain and LlamaIndex adapters against manager.encode",
    "sync": "keeping an index current (sync after 2% of rows changed) and exact search over the output; a first "
            "run on a loaded box (load average ~12), to be redone quietly",
    "issue24": "issue 24, third session: the model's idle share, server CPU per request outside the model, "
               "bf16 against fp32, the threads/HTTP/gRPC/int8 rows (steal-free: hypervisor steal 1%, load ~1.5)",
    "openloop": "issue 24: open-loop capacity at p99 <= 100 ms for our HTTP (wrk) and gRPC (Node @grpc/grpc-js) "
                "servers on torch and on ONNX Runtime fp32, and infinity-emb's; wrk's closed loop; one sentence "
                "per call onnx against torch (steal 2%)",
    "session4": "issue 24, fourth session: the first vector from a fresh process (ONNX Runtime without torch's "
                "import, against torch), one sentence per call, and the open-loop capacity searches again, each "
                "request's CPU split into model, server outside it and load generator (steal 1%)",
    "session5": "issue 24, fifth session: ONNX Runtime's streams (two one-thread passes side by side) against one "
                "stream on both cores, in-process and behind the servers at open load",
    "session5-switch": "issue 24, fifth session, the open-loop searches again once serve paced its threads at a "
                       "1 ms switch interval (all our servers; steal 3%)",
    "session6": "issue 24, sixth session: the gRPC searches on a native load generator (grpc-go) and, for the "
                "same ONNX Runtime server, on the Node generator of the earlier rounds, interleaved",
    "session6-floor": "issue 24, sixth session: the floor of each server stack (uvicorn, grpc.aio, grpc's "
                      "thread-pool server) answering a stored vector, against the issue's bounds and our servers",
    "session6-after": "issue 24, sixth session, the open-loop searches again after the queued log, the frozen heap "
                      "and grpc-go on one scheduler thread (steal 3%)",
    "session8-floor": "issue 24, eighth session: the floors again, each server's event-loop thread read apart from "
                      "its other threads (steal 8%)",
    "session9-batches": "issue 24, ninth session: the HTTP and gRPC rows with batches of 64 also in CPU per text "
                        "(the server's and the client's against the in-process encode's), steal 0%",
    "session10-int8": "issue 24, tenth session: int8 and fp32 ONNX Runtime against fp32 torch, the table beside "
                      "benchmarks/op_shares.py's split of a pass by operator (steal 0%)",
    "session10-precision": "issue 24, tenth session: bf16 against fp32 through the generator and through one "
                           "server holding both (HTTP and gRPC), on a CPU that emulates bf16 (steal 0%)",
}


def pictures() -> list[str]:
    """The README's section of pictures (``python -m benchmarks.plots`` draws them from the JSON)."""
    lines = ["", "## Pictures", "",
             "Drawn from the same JSON by `python -m benchmarks.plots` (`make plots`); a picture shows what the run",
             "measured and says what it did not.", ""]
    for name, caption in PLOTS.items():
        lines += [f"![{caption}](results/{name})", "", f"*{caption}.*", ""]
    lines += ["## Other runs", ""]
    lines += [f"- [results/{folder}/latest.md](results/{folder}/latest.md): {what}" for folder, what in OTHER_TABLES.items()]
    return lines


def _ratio(row: dict[str, Any]) -> str:
    if row["unit"] == "ms":  # latency rows: the difference reads better than a ratio
        return f"{row['value'] - row['baseline_value']:+.1f} ms"
    return f"{row['ratio']:.3f}"


def _target(row: dict[str, Any]) -> str:
    if row.get("target") is None:
        return ""
    return f"≥ {row['target']:g} {'✅' if row.get('met') else '❌'}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| scenario | variant | value | baseline | ratio | target | spread |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        spread = "" if r.get("spread") is None else f"{r['spread']:.0%}"
        out.append(
            f"| {r['scenario']} | {r['variant']} | {r['value']:,.2f} {r['unit']} | {r['baseline']}: "
            f"{r['baseline_value']:,.2f} {r['unit']} | {_ratio(r)} | {_target(r)} | {spread} |"
        )
    return out


def _load(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _cpu_line(meta: dict[str, Any]) -> list[str]:
    """The CPU and its load (runs since issue 24 record them; older ones render as before)."""
    cpu = meta.get("cpu")
    if not cpu:
        return []
    start = meta.get("cpu_at_start") or {}
    before = start.get("load_avg") or ["?"]
    steal = ""
    ticks = (start.get("ticks"), cpu.get("ticks"))
    if all(ticks) and ticks[1][0] > ticks[0][0]:  # type: ignore[index]
        share = (ticks[1][1] - ticks[0][1]) / (ticks[1][0] - ticks[0][0])  # type: ignore[index]
        steal = f" Hypervisor steal: {share:.0%} of the CPU time during the run."
    return [f"CPU: {cpu['cpu_model']}; ISA: {', '.join(cpu['isa']) or 'none of note'}; load average (1 min) "
            f"{_load(before[0])} at the start, {_load(cpu['load_avg'][0])} at the end.{steal}"]


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        INTRO.format(estimator=meta.get("estimator", "median"), repeat=meta.get("repeat", 3)),
        f"Latest run: {meta.get('time', '?')}; {meta.get('cpus', '?')} CPUs, {meta.get('machine', '?')}, "
        f"Python {meta.get('python', '?')}; {meta.get('n', '?')} sentences, batch {meta.get('batch', '?')}.",
        *_cpu_line(meta),
        "",
        *table(data["rows"]),
    ]
    notes = [f"- {r['scenario']} / {r['variant']}: {r['note']}" for r in data["rows"] if r.get("note")]
    if notes:
        lines += ["", "Notes of the run:", "", *notes]
    return "\n".join(lines) + "\n"


def readme(data: dict[str, Any]) -> str:
    """benchmarks/README.md: the main run's table, then the pictures and the other runs' tables."""
    return render(data) + "\n".join(pictures()).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.render", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if benchmarks/README.md is not up to date")
    parser.add_argument("--json", type=Path, default=LATEST)
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    text = readme(data)
    if args.check:
        if not README.exists() or README.read_text() != text:
            print(f"{README} is not rendered from {args.json}: run python -m benchmarks.render", file=sys.stderr)
            return 1
        return 0
    README.write_text(text)
    (args.json.parent / "latest.md").write_text(render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
