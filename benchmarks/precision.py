"""``hf:`` precision: bf16 against fp32 through the generator, speed and agreement (issue 24, item 4).

The target (>= 2.5x at min cosine >= 0.9995) is for CPUs with native bf16 (AMX, AVX-512-BF16);
elsewhere torch emulates bf16 and the row shows what that costs, with no target. The agreement
figures decide whether bf16 and fp32 share an embedding space (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterator

from .accuracy import cosines, retrieval_agreement
from .data import mixed_texts, short_sentences, varied_texts
from .harness import Row, compare

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
