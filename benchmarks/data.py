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
