"""Deterministic short sentences for benchmarks (no data set download)."""

from __future__ import annotations

import random

_SUBJECTS = ["The agent", "A user", "The model", "Our team", "The server", "A researcher", "The cat", "My friend",
             "The retriever", "A customer", "The planner", "This library"]
_VERBS = ["reads", "writes", "embeds", "searches for", "summarizes", "compares", "stores", "explains", "finds",
          "ranks", "translates", "ignores"]
_OBJECTS = ["a short document", "the quarterly report", "several product reviews", "a question about taxes",
            "the latest news", "a recipe for bread", "an error message", "the user manual", "a poem about rain",
            "two similar sentences", "the meeting notes", "a support ticket"]
_TAILS = ["", " quickly", " before lunch", " in French", " for the second time", " with great care",
          " on a small laptop", " every morning"]


def short_sentences(n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` distinct-ish short English sentences (5–12 words), the same for a given seed."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)} (#{i})."
        for i in range(n)
    ]


def varied_texts(n: int = 20_000, seed: int = 0) -> list[str]:
    """``n`` texts of varied length, as a corpus has: mostly one to three sentences, some passages
    of up to twelve (about 10 to 200 tokens), with a few exact duplicates."""
    rng = random.Random(seed)
    pool = short_sentences(max(n, 16), seed=seed + 1)
    texts = []
    for i in range(n):
        if i and rng.random() < 0.02:
            texts.append(texts[rng.randrange(i)])  # a duplicate, as real corpora have
            continue
        count = rng.choice([1, 1, 1, 2, 2, 3, 4, 6, 8, 12])
        texts.append(" ".join(rng.choice(pool) for _ in range(count)))
    return texts


def mixed_texts(n: int = 2000, seed: int = 0) -> list[str]:
    """Search traffic of mixed lengths: three short queries (about 14 tokens), then one passage of
    about 200 tokens (fourteen sentences), repeated; the same for a given seed."""
    rng = random.Random(seed)
    pool = short_sentences(max(n, 64), seed=seed + 2)
    return [rng.choice(pool) if i % 4 else " ".join(rng.choice(pool) for _ in range(14)) for i in range(n)]
