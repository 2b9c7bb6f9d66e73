"""A third-party backend: ``acme:hash-<dims>`` block ids give feature-hashing embeddings.

Installing this package is all it takes: agent-embeddings finds it through the
``agent_embeddings`` entry point and routes ``acme:`` block ids here.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from pydantic import Field

from agent_embeddings import AbstractEmbeddingGenerator, GeneratorParams, hookimpl

_WORD = re.compile(r"\w+")


class AcmeParams(GeneratorParams):
    """``llm_parameters`` for ``acme:`` items (plus normalize, dims, dimensions, batch_size)."""

    seed: int = Field(default=0, description="Changes the hashing, hence the vector space.")


class AcmeEmbeddings(AbstractEmbeddingGenerator):
    """Bag-of-words feature hashing: deterministic, dependency-free, fast."""

    provider = "acme"
    Params = AcmeParams

    def __init__(self, model: str, *, seed: int = 0, width: int = 64, **common):
        super().__init__(model=model, **common)
        self.seed = seed
        self.width = width

    @classmethod
    def from_params(cls, item, params):
        # "acme:hash-128" -> 128 dimensions; any other model name -> 64
        match = re.fullmatch(r"hash-(\d+)", item.model)
        width = int(match.group(1)) if match else 64
        return cls(item.model, width=width, **params.model_dump())

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(f"{self.seed}:{word}".encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.width
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
        return out


@hookimpl
def register_embedding_backends(register):
    register("acme", AcmeEmbeddings.from_model_item)
