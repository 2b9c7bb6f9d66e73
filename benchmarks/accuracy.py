"""How close a candidate's vectors are to a reference's: per-text cosine and nearest-neighbour agreement.

For the onnx scenario: int8 (candidate) against fp32 torch (reference), the same texts in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine of each candidate row with the same reference row (vectors need not be unit)."""
    return np.asarray((_unit(reference) * _unit(candidate)).sum(axis=1))


def retrieval_agreement(
    reference_corpus: np.ndarray,
    candidate_corpus: np.ndarray,
    reference_queries: np.ndarray,
    candidate_queries: np.ndarray,
    k: int = 10,
    corpus_texts: Sequence[str] | None = None,
) -> dict[str, float]:
    """Search the corpus with each query, once with the reference's vectors and once with the candidate's
    (cosine similarity), and compare the answers.

    ``top1``: fraction of queries whose first hit is the same; ``overlap``: mean fraction of the
    reference's top ``k`` also in the candidate's; ``top1_in_top_k``: fraction of queries whose reference
    first hit is in the candidate's top ``k``; ``median_margin``: median gap, in reference scores,
    between the reference's first and second hit (small: near-ties, so ``top1`` is a harsh measure).
    With ``corpus_texts``, hits with the same text count as the same hit (a corpus's exact duplicates
    tie, and which of them comes first is noise).
    """
    k = min(k, len(reference_corpus))
    ids = np.unique(list(corpus_texts), return_inverse=True)[1] if corpus_texts is not None else None
    ref_scores = _unit(reference_queries) @ _unit(reference_corpus).T
    cand_scores = _unit(candidate_queries) @ _unit(candidate_corpus).T
    ref_top = np.argsort(-ref_scores, axis=1, kind="stable")[:, :k]
    cand_top = np.argsort(-cand_scores, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(ref_scores))
    margin = ref_scores[rows, ref_top[:, 0]] - ref_scores[rows, ref_top[:, min(1, k - 1)]]
    if ids is not None:
        ref_top, cand_top = ids[ref_top], ids[cand_top]
    return {
        "top1": float((ref_top[:, 0] == cand_top[:, 0]).mean()),
        "overlap": float(np.mean([len(set(r) & set(c)) / len(set(r)) for r, c in zip(ref_top, cand_top)])),
        "top1_in_top_k": float(np.mean([r[0] in c for r, c in zip(ref_top, cand_top)])),
        "median_margin": float(np.median(margin)),
    }
