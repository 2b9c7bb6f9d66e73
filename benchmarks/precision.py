"""``hf:`` precision: bf16 against fp32 through the generator and both servers, speed and agreement
(issue 24, item 4).

The target (>= 2.5x at min cosine >= 0.9995) is for CPUs with native bf16 (AMX, AVX-512-BF16);
elsewhere torch emulates bf16 and the rows show what that costs, with no target. The agreement
figures decide whether bf16 and fp32 share an embedding space (docs/performance.md). The servers'
rows start one ``agent-embeddings serve`` with both precisions as two models (HTTP and gRPC), and
send the same batches to each in turn.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .accuracy import cosines, retrieval_agreement
from .data import mixed_texts, short_sentences, varied_texts
from .harness import Row, compare
from .traffic import poster

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def agreement_texts(n: int) -> list[str]:
    """Mixed texts: 40% short sentences, 40% corpus texts of 1-12 sentences, 20% search traffic."""
    k = max(1, n * 2 // 5)
    return short_sentences(k, seed=3) + varied_texts(k, seed=5) + mixed_texts(max(1, n - 2 * k), seed=9)


def precision(n: int, batch: int, repeat: int) -> Iterator[Row]:
    from agent_embeddings import HuggingFaceEmbeddingGenerator
    from agent_embeddings.backends.precision import BF16_CPU_FLAGS, cpu_flags

    fp32 = HuggingFaceEmbeddingGenerator(model_name=MODEL, batch_size=batch, micro_batching=False)
    bf16 = HuggingFaceEmbeddingGenerator(model_name=MODEL, batch_size=batch, micro_batching=False, precision="bf16")
    auto = HuggingFaceEmbeddingGenerator(model_name=MODEL, batch_size=batch, micro_batching=False, precision="auto")
    texts = agreement_texts(min(n, 1000))
    queries = short_sentences(max(1, len(texts) // 10), seed=7)
    reference, candidate = fp32.encode(texts), bf16.encode(texts)
    cos = cosines(reference, candidate)
    agree = retrieval_agreement(reference, candidate, fp32.encode(queries), bf16.encode(queries), corpus_texts=texts)
    native = sorted(set(BF16_CPU_FLAGS) & cpu_flags())
    picked = auto.space().precision
    # emulated bf16 is ~5x slower: time it on up to 500 short sentences, both sides the same texts
    timed_texts = short_sentences(min(n, 500), seed=1)
    cand_s, base_s, spread = compare(lambda: bf16.encode(timed_texts), lambda: fp32.encode(timed_texts), repeat)
    yield Row("11 precision", "hf precision=bf16 encode", "texts/s", len(timed_texts) / cand_s,
              "hf precision=fp32", len(timed_texts) / base_s, target=2.5 if native else None, spread=spread,
              extra={"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "top1_same": agree["top1"],
                     "top10_overlap": agree["overlap"], "agreement_texts": len(texts), "native_bf16": native,
                     "auto_picks": picked},
              note=f"bf16 vs fp32 on {len(texts)} mixed texts: min cosine {cos.min():.5f}, mean {cos.mean():.5f}; "
                   f"{len(queries)} queries against them: top-1 the same {agree['top1']:.3f}, top-10 overlap "
                   f"{agree['overlap']:.3f}; native bf16 flags: {', '.join(native) or 'none (bf16 emulated)'}; "
                   f"precision=auto picks {picked} here; speed on {len(timed_texts)} short sentences, batch {batch}")
    for gen in (fp32, bf16, auto):
        gen.close()
    yield from _served(timed_texts, batch, repeat, target=2.5 if native else None)


def _served(texts: list[str], batch: int, repeat: int, target: float | None) -> Iterator[Row]:
    """bf16 against fp32 behind one server, batches of ``batch`` over HTTP (base64) and gRPC (aios:)."""
    from agent_embeddings import AIOSEmbeddings
    from agent_embeddings.server.process import ServeProcess

    def item(precision: str) -> dict:
        return {"llm_type": "embeddings", "name": precision, "llm_block_id": f"hf:{MODEL}",
                "llm_parameters": {"device": "cpu", "backend": "torch", "precision": precision, "batch_size": batch}}

    def in_batches(fn: Callable[[list[str]], object]) -> Callable[[], object]:
        return lambda: [fn(texts[i : i + batch]) for i in range(0, len(texts), batch)]

    with tempfile.TemporaryDirectory(prefix="ae-bench-precision-") as tmp:
        spec = Path(tmp) / "precisions.json"
        spec.write_text(json.dumps({"subject_id": "precision-bench", "models": [item("fp32"), item("bf16")]}))
        with ServeProcess(spec, http="127.0.0.1:0", grpc="127.0.0.1:0") as served:
            url, address = f"http://{served.addresses['http']}", served.addresses["grpc"]
            http = {precision: poster(url, precision, timeout_s=600) for precision in ("bf16", "fp32")}
            with AIOSEmbeddings(grpc_url=address, model="bf16", batch_size=batch, timeout_s=600) as g_bf16, \
                    AIOSEmbeddings(grpc_url=address, model="fp32", batch_size=batch, timeout_s=600) as g_fp32:
                for path, cand, base in (("HTTP", http["bf16"], http["fp32"]), ("gRPC", g_bf16.encode, g_fp32.encode)):
                    cand(texts[:batch])  # warm: each model's first pass
                    base(texts[:batch])
                    cand_s, base_s, spread = compare(in_batches(cand), in_batches(base), repeat)
                    yield Row("11 precision", f"{path} server, batches of {batch}: precision=bf16", "texts/s",
                              len(texts) / cand_s, "the same server's precision=fp32 model", len(texts) / base_s,
                              target=target, spread=spread,
                              note=f"one agent-embeddings serve with both precisions as models, {len(texts)} "
                                   f"short sentences in batches of {batch}, rounds interleaved")
