"""The output contract, applied once for every backend: one finite row per text, one width,
``dimensions`` (Matryoshka truncation), declared ``dims``, normalization and token usage.

>>> parts = [accept([[3.0, 4.0]], 1, who="g"), accept(np.array([[0.0, 2.0]]), 1, who="g")]
>>> finish(parts, dims=2, dimensions=None, normalize=True, who="g")[0].tolist()
[[0.6000000238418579, 0.800000011920929], [0.0, 1.0]]
"""

from __future__ import annotations

import numpy as np

from .errors import EmbeddingContractError
from .results import BackendResult, RawBatch
from .vectors import as_matrix, check_dims, l2_normalize, truncate

__all__ = ["accept", "finish"]


def accept(raw: RawBatch, rows: int, *, who: str) -> BackendResult:
    """A backend's output for ``rows`` texts as a float32 matrix (checked) and its token count."""
    tokens = None
    if isinstance(raw, BackendResult):
        tokens = raw.prompt_tokens if raw.token_counts is None else sum(raw.token_counts)
        raw = raw.vectors
    return BackendResult(as_matrix(raw, rows, who=who), tokens)


def finish(
    parts: list[BackendResult], *, dims: int | None, dimensions: int | None, normalize: bool, who: str
) -> tuple[np.ndarray, int | None]:
    """The chunks of one call as one matrix, shortened, checked and normalized; and its tokens
    (None when a chunk's backend could not tell)."""
    widths = {p.vectors.shape[1] for p in parts}
    if len(widths) > 1:
        raise EmbeddingContractError(f"{who}: returned vectors of unequal lengths {sorted(widths)}")
    matrix = parts[0].vectors if len(parts) == 1 else np.concatenate([p.vectors for p in parts])
    if dimensions is not None:
        matrix = truncate(matrix, dimensions, who=who)
    check_dims(matrix, dims, who=who)
    if normalize:
        matrix = l2_normalize(matrix)
    counts = [p.prompt_tokens for p in parts]
    tokens = None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
    return matrix, tokens
