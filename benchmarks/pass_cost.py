"""What one forward pass costs by its size, per engine: the fixed cost that small batches (a lone
caller, a server under open load) pay on every pass, beside the cost per text.

``python -m benchmarks.pass_cost`` prints, for 1-16 short sentences per call, the fastest of
``--rounds`` interleaved rounds (``--calls`` calls each) of the hf generator's ``encode`` on torch,
ONNX Runtime fp32 and ONNX Runtime int8 (micro-batching off; the onnx rows need the ``onnx`` extra).
"""

from __future__ import annotations

import argparse
import time

from agent_embeddings._deps import ONNX_MODULES, installed

from .data import short_sentences
from .harness import cpu_info

SIZES = (1, 2, 4, 8, 16)


def main(argv: list[str] | None = None) -> int:
    from agent_embeddings import HuggingFaceEmbeddingGenerator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=6)
    args = parser.parse_args(argv)
    engines = ["torch"] + (["onnx", "onnx-int8"] if installed(*ONNX_MODULES) else [])
    gens = {e: HuggingFaceEmbeddingGenerator(model_name="sentence-transformers/all-MiniLM-L6-v2", batch_size=64,
                                             backend=e, micro_batching=False) for e in engines}
    texts = short_sentences(200)
    for gen in gens.values():
        gen.encode(texts[:64])  # load, export on first use, warm
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.rounds):
        for engine, gen in gens.items():
            for size in SIZES:
                for call in range(args.calls):
                    start = time.perf_counter()
                    gen.encode(texts[call : call + size])
                    spent = time.perf_counter() - start
                    best[engine, size] = min(best.get((engine, size), spent), spent)
    cpu = cpu_info()
    print(f"CPU: {cpu['cpu_model']}; ISA: {', '.join(cpu['isa']) or 'baseline'}; load average {cpu['load_avg'][0]:.1f}")
    print("| texts per pass | " + " | ".join(f"{e} ms" for e in engines) + " |")
    print("|---" * (len(engines) + 1) + "|")
    for size in SIZES:
        print(f"| {size} | " + " | ".join(f"{best[e, size] * 1000:.1f}" for e in engines) + " |")
    for gen in gens.values():
        gen.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
