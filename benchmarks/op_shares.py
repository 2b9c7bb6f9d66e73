"""Where a forward pass's time goes, by operator, in ONNX Runtime fp32 and int8: what bounds the int8
row (issue 24: onnx-int8 >= 3x fp32 torch on a CPU without AMX).

``python -m benchmarks.op_shares`` loads both graphs of the default model through ``load_onnx_encoder``
(exporting and quantizing into the cache on first use), runs ``--passes`` passes of ``--batch`` texts
on each with ONNX Runtime's profiler on, ``--rounds`` interleaved rounds, and prints each operator
type's kernel time per pass from the fastest round of each graph, with the matrix products summed
(``MatMul``, ``FusedMatMul`` in fp32; ``DynamicQuantizeMatMul``, ``MatMulIntegerToFloat``,
``DynamicQuantizeLinear`` in int8). The ratio of the two sums is what int8 math gains on this CPU;
the rest of the pass (normalizations, GELU, attention's softmax and transposes, the smoothing Muls)
it does not speed up.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

from .data import short_sentences, varied_texts
from .harness import cpu_info

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: The operators that multiply matrices, in either graph: their sum is what int8 math can speed up.
PRODUCTS = {"MatMul", "FusedMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLinear",
            "MatMulInteger"}


def _profile(model_file: Path, feed: dict, threads: int, passes: int) -> tuple[float, dict[str, float]]:
    """(wall seconds per pass, kernel milliseconds per pass by operator type) over ``passes`` passes."""
    import onnxruntime as ort

    from agent_embeddings.backends.onnx_encode import session_options

    options = session_options(threads)  # the product's own, with the profiler on
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "ae-op-shares")
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    inputs = {i.name: feed[i.name] for i in session.get_inputs()}
    session.run(None, inputs)  # warm: the profile counts this pass too, so it is subtracted below
    start = time.perf_counter()
    for _ in range(passes):
        session.run(None, inputs)
    wall = (time.perf_counter() - start) / passes
    path = session.end_profiling()
    try:
        events = json.loads(Path(path).read_text())
    finally:
        os.unlink(path)
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    first_end = runs[0]["ts"] + runs[0]["dur"] if runs else 0
    by_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_end:
            by_op[e["args"]["op_name"]] += e["dur"] / 1000 / passes
    return wall, dict(by_op)


def main(argv: list[str] | None = None) -> int:
    from agent_embeddings.backends.onnx_encode import cpu_cores
    from agent_embeddings.backends.onnx_runtime import load_onnx_encoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=cpu_cores(), help="ONNX Runtime threads per pass")
    parser.add_argument("--texts", choices=("short", "varied"), default="short")
    args = parser.parse_args(argv)
    from agent_embeddings.backends.local_models import resolve_model_path

    path = resolve_model_path(MODEL)
    graphs = {name: load_onnx_encoder(path, quantize=name == "int8") for name in ("fp32", "int8")}
    texts = (short_sentences if args.texts == "short" else varied_texts)(args.batch)
    feed = graphs["fp32"].feed(texts)
    best: dict[str, tuple[float, dict[str, float]]] = {}
    for _ in range(args.rounds):
        for name, encoder in graphs.items():
            wall, by_op = _profile(encoder.model_file, feed, args.threads, args.passes)
            if name not in best or wall < best[name][0]:
                best[name] = (wall, by_op)
    cpu = cpu_info()
    print(f"CPU: {cpu['cpu_model']}; ISA: {', '.join(cpu['isa']) or 'baseline'}; load average {cpu['load_avg'][0]:.1f}")
    print(f"{args.batch} {args.texts} texts per pass, {args.threads} thread(s), best of {args.rounds} rounds "
          f"of {args.passes} passes")
    products = {name: sum(v for op, v in by_op.items() if op in PRODUCTS) for name, (_, by_op) in best.items()}
    kernels = {name: sum(by_op.values()) for name, (_, by_op) in best.items()}
    print("| ms per pass | fp32 | int8 | fp32 / int8 |")
    print("|---|---|---|---|")
    rows = [("wall", {n: w * 1000 for n, (w, _) in best.items()}), ("all kernels", kernels),
            ("matrix products", products), ("the rest", {n: kernels[n] - products[n] for n in best})]
    for label, value in rows:
        print(f"| {label} | {value['fp32']:.1f} | {value['int8']:.1f} | {value['fp32'] / value['int8']:.2f}x |")
    for name, (_, by_op) in best.items():
        top = sorted(by_op.items(), key=lambda kv: -kv[1])[:8]
        print(f"{name}: " + ", ".join(f"{op} {ms:.1f}" for op, ms in top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
