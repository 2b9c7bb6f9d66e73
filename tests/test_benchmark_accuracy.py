"""benchmarks.accuracy: the cosine and retrieval-agreement figures the onnx scenario reports."""

from __future__ import annotations

import numpy as np

from benchmarks.accuracy import cosines, retrieval_agreement


def test_identical_vectors_agree_fully():
    rng = np.random.default_rng(0)
    corpus, queries = rng.normal(size=(50, 8)), rng.normal(size=(7, 8))
    np.testing.assert_allclose(cosines(corpus, 3 * corpus), 1.0, rtol=1e-6)
    got = retrieval_agreement(corpus, corpus, queries, queries, k=5)
    assert got["top1"] == got["overlap"] == got["top1_in_top_k"] == 1.0 and got["median_margin"] > 0


def test_swapped_first_hits_and_duplicates():
    corpus = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.0, 1.0]])
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    # the candidate ranks document 1 above document 0 for the first query
    candidate = corpus.copy()
    candidate[1] = [1.0, 0.0]
    candidate[0] = [0.9, 0.1]
    got = retrieval_agreement(corpus, candidate, queries, queries, k=2)
    assert got["top1"] == 0.5 and got["overlap"] == 1.0 and got["top1_in_top_k"] == 1.0
    # documents 2 and 3 are the same text: whichever comes first, the hit is the same
    flipped = corpus.copy()
    flipped[2] = [0.01, 1.0]  # the candidate puts document 3 first for the second query
    assert retrieval_agreement(corpus, flipped, queries, queries, k=1)["top1"] == 0.5
    texts = ["a", "b", "c", "c"]
    assert retrieval_agreement(corpus, flipped, queries, queries, k=1, corpus_texts=texts)["top1"] == 1.0
