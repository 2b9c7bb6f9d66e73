"""Pictures of the benchmark results, drawn from the JSON the runs wrote (``results/**/latest.json``).

    python -m benchmarks.plots                      # PNGs next to the tables (make plots)
    python -m benchmarks.plots --results DIR --out DIR

Like the tables, the pictures are made from the figures, never typed: rerun this after ``make
bench``. A plot whose rows a run did not write is left out, saying so. Figures the scenarios
keep in a row's ``extra`` are read from there; results written before a scenario kept them
(p50 under load, int8 accuracy) have them only in the row's note, read by :func:`from_note`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .render import PLOTS  # noqa: E402  (the README's captions)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

Rows = list[dict[str, Any]]


def load(results: Path) -> dict[str, Rows]:
    """Every run's rows by folder (``""`` for ``results/latest.json``, ``"bulk"``, ...)."""
    runs = {}
    for path in sorted(results.glob("**/latest.json")):
        data = json.loads(path.read_text())
        key = str(path.parent.relative_to(results)).replace(".", "")
        runs[key] = [{**row, "_time": data.get("meta", {}).get("time", "")} for row in data["rows"]]
    return runs


def find(rows: Rows, scenario: str, variant: str, baseline: str | None = None) -> dict[str, Any] | None:
    """The first row of ``scenario`` whose variant starts with ``variant`` (and baseline with ``baseline``)."""
    for row in rows:
        if row["scenario"] == scenario and row["variant"].startswith(variant) and (
                baseline is None or row["baseline"].startswith(baseline)):
            return row
    return None


def from_note(row: dict[str, Any], keys: tuple[str, ...], pattern: str) -> tuple[float, ...] | None:
    """The figures ``keys`` of ``row["extra"]`` when the run kept them there, else the numbers that
    ``pattern`` finds in the row's note (runs written before the scenario kept them), else None."""
    extra = row.get("extra") or {}
    if all(key in extra for key in keys):
        return tuple(float(extra[key]) for key in keys)
    found = re.search(pattern, row.get("note", ""))
    return tuple(float(g) for g in found.groups()) if found else None


def _bar_labels(ax: Any, bars: Any, unit: str = "") -> None:
    for bar in bars:
        ax.annotate(f"{bar.get_height():,.0f}{unit}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")


def _peer(rows: Rows, shape: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["scenario"] == "8 peer" and r["variant"].startswith("infinity")
                 and shape in r["variant"]), None)


def throughput(runs: dict[str, Rows]) -> Figure | None:
    rows = runs.get("", [])
    paths = [
        ("in-process\n(manager)", find(rows, "2 threads", "16 threads x 1 sentence, with micro-batching"),
         find(rows, "1 core", "manager.encode")),
        ("HTTP\n(serve --http)", find(rows, "3 http", "16 clients"), find(rows, "3 http", "1 client, batches", "st.")),
        ("gRPC\n(serve --grpc)", find(rows, "4 grpc", "16 clients"), find(rows, "4 grpc", "1 client, batches", "st.")),
        ("peer server\n(infinity-emb)", _peer(rows, "singles"), _peer(rows, "batches")),
    ]
    paths = [p for p in paths if p[1] is not None or p[2] is not None]
    if not paths:
        return None
    raw = [r["baseline_value"] for _, *pair in paths for r in pair if r and r["baseline"].startswith("st.encode")]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width, xs = 0.38, range(len(paths))
    singles = ax.bar([x - width / 2 for x in xs], [p[1]["value"] if p[1] else 0 for p in paths], width,
                     label="16 concurrent callers x 1 text")
    batches = ax.bar([x + width / 2 for x in xs], [p[2]["value"] if p[2] else 0 for p in paths], width,
                     label="1 caller, batches of 64 texts")
    _bar_labels(ax, singles)
    _bar_labels(ax, batches)
    if raw:
        ax.axhline(statistics.median(raw), color="black", linestyle="--", linewidth=1,
                   label=f"raw model: sentence-transformers encode, batches of 64 (median {statistics.median(raw):,.0f})")
    ax.set_xticks(list(xs), [p[0] for p in paths])
    ax.set_ylabel("texts/s (higher is better)")
    ax.set_title("Throughput by path and load shape (all-MiniLM-L6-v2, CPU)", fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(0, max(b.get_height() for b in [*singles, *batches]) * 1.45)
    return fig


def latency(runs: dict[str, Rows]) -> Figure | None:
    rows = runs.get("", [])
    loads = []
    for row in rows:
        found = re.match(r"open loop, Poisson arrivals at (\d+)% of capacity", row["variant"])
        if row["scenario"] == "2c fill" and found:
            load = float((row.get("extra") or {}).get("offered_load", int(found.group(1)) / 100))
            p50 = from_note(row, ("p50_ms", "baseline_p50_ms"), r"p50 ([\d.]+) vs ([\d.]+) ms")
            loads.append((load, row["value"], row["baseline_value"], p50))
    if not loads:
        return None
    loads.sort()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [100 * load for load, *_ in loads]
    ax.plot(x, [fill for _, fill, _, _ in loads], "o-", color="C0", label="p99, batches filled to the callers (default)")
    ax.plot(x, [window for _, _, window, _ in loads], "s--", color="C1", label="p99, plain 2 ms window")
    if all(p50 for *_, p50 in loads):
        ax.plot(x, [p50[0] for *_, p50 in loads], "o-", color="C0", alpha=0.45, label="p50, batches filled (default)")
        ax.plot(x, [p50[1] for *_, p50 in loads], "s--", color="C1", alpha=0.45, label="p50, plain 2 ms window")
    lone = find(rows, "2c fill", "lone caller, p50")
    if lone:
        ax.plot([0], [lone["value"]], "D", color="C2", label=f"p50, one caller at a time ({lone['value']:.1f} ms)")
    ax.set_xlabel("offered load (% of the 2 ms window's measured capacity)")
    ax.set_ylabel("latency, ms (lower is better)")
    ax.set_xlim(-5, 100)
    ax.set_ylim(0, None)
    ax.set_title("Single-text latency against offered load (in-process, micro-batching)", fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def int8(runs: dict[str, Rows]) -> Figure | None:
    rows = runs.get("", [])
    quantized, fp32 = find(rows, "5 onnx int8", "hf backend=onnx-int8"), find(rows, "5 onnx int8", "hf backend=onnx (fp32)")
    if quantized is None:
        return None
    accuracy = from_note(quantized, ("mean_cosine", "min_cosine"), r"mean cosine ([\d.]+), min ([\d.]+)")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([1.0], [1.0], "o", color="C0", markersize=9, label="torch fp32 (the reference)")
    if fp32 is not None:
        ax.plot([fp32["ratio"]], [1.0], "s", color="C1", markersize=9,
                label=f"ONNX fp32: {fp32['ratio']:.2f}x (same vectors, to 1e-6)")
    if accuracy is not None:
        mean, low = accuracy
        ax.errorbar([quantized["ratio"]], [mean], yerr=[[mean - low], [0]], fmt="D", color="C3", markersize=9,
                    capsize=4, label=f"ONNX int8: {quantized['ratio']:.2f}x, mean cosine {mean:.4f} (bar: min {low:.4f})")
        ax.set_ylim(min(low, 0.99) - 0.003, 1.0015)
    if quantized.get("target"):
        ax.axvline(quantized["target"], color="gray", linestyle=":", linewidth=1,
                   label=f"speed target {quantized['target']:g}x")
    ax.axhline(0.99, color="gray", linestyle="--", linewidth=1, label="accuracy target: cosine >= 0.99")
    ax.set_xlabel("speed relative to torch fp32 (encode, texts/s)")
    ax.set_ylabel("cosine to the fp32 torch vectors")
    ax.set_xlim(0.5, max(quantized["ratio"], quantized.get("target") or 0) + 0.7)
    ax.set_title("int8: speed against accuracy (all-MiniLM-L6-v2, CPU)", fontsize=11)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def bulk(runs: dict[str, Rows]) -> Figure | None:
    rows = [r for key, rs in runs.items() if key.startswith("bulk") for r in rs]
    engine = find(rows, "8 bulk", "local engine,")
    memory = sorted((r for r in rows if r["scenario"] == "8b memory"), key=lambda r: r["_time"])
    if engine is None and not memory:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    bars = []
    if engine is not None:
        corpus = (engine.get("extra") or {}).get("rows") or int(re.search(r"([\d,]+) varied", engine["variant"])
                                                                 .group(1).replace(",", ""))
        bars = [("local engine", engine["value"]), ("manager.encode,\narrival order", engine["baseline_value"])]
        ordered = find(rows, "8 bulk", "length sorting alone")
        if ordered:
            bars.append(("manager.encode,\nunique, by length", ordered["value"]))
        ray = find(rows, "9 ray", "Ray engine")
        if ray:
            size = re.search(r"([\d,]+) texts", ray["variant"])
            bars.append((f"Ray engine, 2 actors\n({size.group(1) if size else '?'} texts)", ray["value"]))
        drawn = left.bar([b[0] for b in bars], [b[1] for b in bars], color=["C0", "C7", "C7", "C2"][: len(bars)])
        _bar_labels(left, drawn)
        left.set_ylabel("texts/s (higher is better)")
        left.set_title(f"Throughput, {corpus:,} texts of varied length\n(one corpus size measured)", fontsize=10)
        left.tick_params(axis="x", labelsize=7)
    if memory:
        last = memory[-1]
        extra = last.get("extra") or {}
        small = extra.get("baseline_rows") or int(last["baseline"].split()[0].replace(",", ""))
        large = extra.get("rows") or int(re.search(r"([\d,]+) rows", last["variant"]).group(1).replace(",", ""))
        right.plot([small, large], [last["baseline_value"], last["value"]], "o-", color="C0")
        for rows_, mb in ((small, last["baseline_value"]), (large, last["value"])):
            right.annotate(f"{mb:.0f} MB", (rows_, mb), xytext=(4, -12), textcoords="offset points", fontsize=8)
        right.set_xscale("log")
        right.set_xticks([small, large], [f"{small:,}", f"{large:,}"])
        right.minorticks_off()
        right.set_xlabel("corpus rows (log scale; two sizes measured)")
        right.set_ylabel("peak RSS, MB (lower is better)")
        right.set_ylim(0, max(last["value"], last["baseline_value"]) * 1.3)
        right.set_title("Peak memory of a local job (streamed input)", fontsize=10)
    fig.tight_layout()
    return fig


def adapters(runs: dict[str, Rows]) -> Figure | None:
    rows = [r for r in runs.get("adapters", []) if r["scenario"] == "10 adapters"]
    if not rows:
        return None

    def label(row: dict[str, Any]) -> str:
        if "old default" in row["variant"]:
            return "LlamaIndex adapter,\nbatches of 64 (old default)"
        return "LlamaIndex adapter\n(default)" if row["variant"].startswith("LlamaIndex") else "LangChain adapter"

    labels = ["manager.encode"] + [label(r) for r in rows]
    values = [rows[0]["baseline_value"]] + [r["value"] for r in rows]
    colors = ["C7"] + ["C0" if r.get("target") else "C1" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    drawn = ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    for bar in drawn:
        ax.annotate(f"{bar.get_width():,.1f}", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center",
                    fontsize=8, xytext=(3, 0), textcoords="offset points")
    ax.axvline(0.95 * values[0], color="gray", linestyle="--", linewidth=1, label="target: 0.95 x manager.encode")
    ax.set_xlabel(f"{rows[0]['unit']} (higher is better)")
    ax.set_title(rows[0]["baseline"].replace("manager.encode, same ", "Adapters vs manager.encode: "), fontsize=10)
    ax.set_xlim(0, max(values) * 1.2)
    ax.legend(fontsize=8, loc="lower right")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def openloop(runs: dict[str, Rows]) -> Figure | None:
    """p99 against offered load for each server the open-loop search stepped through (the steps of
    its best search, kept in the capacity row's ``extra``), with the 100 ms bound the search used."""
    servers = [(row["variant"].split(" open-loop capacity")[0], row["extra"]["steps"])
               for row in runs.get("openloop", [])
               if "open-loop capacity" in row["variant"] and "steps" in (row.get("extra") or {})]
    if not servers:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (name, steps) in enumerate(servers):
        points = sorted((rate, p99) for rate, p99, *_ in steps)
        ours = name.startswith(("http", "grpc"))
        label = f"{name}, backend torch" if name in ("http", "grpc") else name if ours else f"{name} (torch)"
        ax.plot([r for r, _ in points], [p for _, p in points], "o-" if ours else "s--", color=f"C{i}", label=label)
    ax.axhline(100, color="grey", linestyle=":", label="p99 bound of the capacity search (100 ms)")
    ax.set_xlabel("offered load (single-sentence requests per second, Poisson arrivals)")
    ax.set_ylabel("p99 latency, ms (lower is better)")
    ax.set_ylim(0, min(500, max(p for _, steps in servers for _, p, *_ in steps) * 1.1))
    ax.set_title("Open-loop p99 against offered load (servers on 2 CPU cores)", fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    return fig


#: Each picture's file under the results folder and the function that draws it (captions: PLOTS).
DRAW: dict[str, Callable[[dict[str, Rows]], Figure | None]] = {
    "throughput.png": throughput, "latency.png": latency, "int8.png": int8, "bulk/bulk.png": bulk,
    "adapters/adapters.png": adapters, "openloop/openloop.png": openloop,
}


def render(results: Path, out: Path) -> tuple[list[Path], list[str]]:
    """Draw every plot the results hold into ``out``: the files written, and the plots left out."""
    runs = load(results)
    written, missing = [], []
    for name in PLOTS:  # every picture the README shows has a function that draws it
        fig = DRAW[name](runs)
        if fig is None:
            missing.append(name)
            continue
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same figures, same file
        plt.close(fig)
        written.append(path)
    return written, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of the runs' latest.json files")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default: the results folder)")
    args = parser.parse_args(argv)
    written, missing = render(args.results, args.out or args.results)
    for path in written:
        print(f"written: {path}", file=sys.stderr)
    for name in missing:
        print(f"left out: {name}: no rows for it in {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
