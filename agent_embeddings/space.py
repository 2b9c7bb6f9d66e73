"""Embedding spaces: what makes two sets of vectors comparable, and how to check it.

Vectors from different generators must never meet in one index. Two things tell whether a
generator still produces the space an index was built in:

* its *identity*: what the spec says changes vectors (provider, model, precision, prompt,
  width, normalization), and
* its *probes*: the vectors of a few fixed sentences, stored with the index. A model swapped
  behind the same endpoint name (``openai:``, ``aios:``) keeps its identity but moves its
  probes, and only the probes can catch that.

``agent-embeddings bulk`` stores both in the ``_embedding.json`` manifest of its output
(:mod:`agent_embeddings.bulk.manifest`); :meth:`EmbeddingGeneratorManager.verify_space` checks a
generator against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .vectors import InputType

if TYPE_CHECKING:
    from .base import AbstractEmbeddingGenerator

__all__ = ["MIN_PROBE_COSINE", "PROBES", "SpaceCheck", "check_space", "compare_identity", "probe_cosines",
           "space_identity"]

# Fixed forever: a manifest's probes are only comparable with the same sentences.
PROBES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Photosynthesis converts light energy into chemical energy.",
    "Der Zug nach Berlin fährt um neun Uhr ab.",
)
# float32 vectors of one model on two machines agree far above this; another model (or another
# prompt, or int8 weights) falls below it on at least one probe.
MIN_PROBE_COSINE = 0.9999

# Generator parameters that change the vectors, when a backend has them.
_VECTOR_SETTINGS = ("backend", "prompt", "prompt_name", "max_seq_length", "revision")


def space_identity(generator: AbstractEmbeddingGenerator, input_type: InputType | None = None) -> dict[str, Any]:
    """What the spec says about the space ``generator`` embeds ``input_type`` texts into.

    Device, URL, batch size and cache are left out: they do not change vectors (the probes
    catch the rare case where they do).
    """
    params = generator.params
    identity: dict[str, Any] = {
        "provider": generator.provider,
        "model": generator.model_identity,
        "dims": generator.output_dims,
        "dimensions": generator.dimensions,
        "normalize": generator.normalize,
        "input": generator.input_signature(input_type) or None,
    }
    for key in _VECTOR_SETTINGS:
        value = getattr(params, key, None)
        if value is not None:
            identity[key] = value
    return identity


def compare_identity(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The differences between two identities, one readable line each (empty: the same space)."""
    return [
        f"{key}: {stored.get(key)!r} vs {current.get(key)!r}"
        for key in sorted(set(stored) | set(current))
        if stored.get(key) != current.get(key)
    ]


def probe_cosines(stored: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two probe matrices of one shape."""
    a = np.asarray(stored, dtype=np.float64)
    b = np.asarray(current, dtype=np.float64)
    if a.shape != b.shape:
        return np.zeros(len(a))
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(np.einsum("ij,ij->i", a, b) / np.where(norms == 0, 1.0, norms))


@dataclass(frozen=True)
class SpaceCheck:
    """The outcome of :func:`verify_space`: equal identity and probes at or above ``MIN_PROBE_COSINE``."""

    manifest: str
    generator: str
    min_cosine: float
    identity_differences: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.identity_differences and self.min_cosine >= MIN_PROBE_COSINE

    def explain(self) -> str:
        """One line per problem, or ``same space`` when there is none."""
        if self.ok:
            return f"same space (probe cosine >= {self.min_cosine:.6f})"
        lines = [f"identity differs in {d}" for d in self.identity_differences]
        if self.min_cosine < MIN_PROBE_COSINE:
            lines.append(
                f"the probe sentences moved: cosine {self.min_cosine:.6f} < {MIN_PROBE_COSINE} "
                "(a different model answers behind this name)"
            )
        return "; ".join(lines)


def check_space(
    generator: AbstractEmbeddingGenerator,
    *,
    identity: Mapping[str, Any],
    probes: np.ndarray,
    probe_texts: list[str],
    input_type: InputType | None,
    where: str,
) -> SpaceCheck:
    """Compare ``generator`` with a stored identity and re-embed the stored probes."""
    current = generator.embed(probe_texts, input_type=input_type).vectors
    cosines = probe_cosines(probes, current)
    return SpaceCheck(
        manifest=where,
        generator=generator.name or generator.provider,
        min_cosine=float(cosines.min()) if len(cosines) else 0.0,
        identity_differences=tuple(compare_identity(identity, space_identity(generator, input_type))),
    )
