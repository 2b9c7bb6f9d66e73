"""Vector math shared by every backend: normalization, truncation, validation.

Everything here works on 2-D float32 numpy arrays (one row per text) and is vectorized,
so the cost stays negligible next to the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np

from .errors import DimensionMismatchError, EmbeddingContractError, InvalidInputError, InvalidInputTypeError

__all__ = [
    "INPUT_TYPES",
    "InputType",
    "as_matrix",
    "check_dims",
    "check_input_type",
    "check_text",
    "check_texts",
    "from_float32_bytes",
    "l2_normalize",
    "to_float32_bytes",
    "truncate",
]


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Return ``matrix`` with every row scaled to unit L2 norm; zero rows stay zero.

    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    # Norms in float64: squaring a tiny float32 component (1e-23) underflows, and the "unit"
    # vector would come out with a norm of 0.93. np.linalg.norm(axis=1) computes exactly this
    # sqrt(sum(x * x)), behind ~10 us of argument handling: a server normalizes every request.
    wide = matrix.astype(np.float64)
    norms = np.sqrt(np.add.reduce(wide * wide, axis=1, keepdims=True))
    out = np.zeros(matrix.shape, dtype=np.float64)
    np.divide(wide, norms, out=out, where=norms > 0)
    return out.astype(matrix.dtype if matrix.dtype.kind == "f" else np.float32, copy=False)


def truncate(matrix: np.ndarray, dimensions: int, *, who: str) -> np.ndarray:
    """Keep the first ``dimensions`` columns (Matryoshka truncation)."""
    width = matrix.shape[1]
    if dimensions > width:
        raise DimensionMismatchError(
            f"{who}: dimensions={dimensions} requested but the model delivers {width}-dimensional "
            f"vectors; dimensions can only shrink vectors"
        )
    return matrix[:, :dimensions] if dimensions < width else matrix


def as_matrix(raw: Any, expected_rows: int, *, who: str) -> np.ndarray:
    """Turn a backend's output into a finite float32 matrix with one row per input text."""
    try:
        matrix = np.asarray(raw, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        lengths = sorted({len(v) for v in raw}) if isinstance(raw, Sequence) else "?"
        raise EmbeddingContractError(
            f"{who}: returned vectors of unequal lengths {lengths}; every vector must have the same dims"
        ) from exc
    if matrix.ndim == 1 and expected_rows == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[0] != expected_rows:
        raise EmbeddingContractError(
            f"{who}: returned output of shape {matrix.shape} for {expected_rows} input(s); "
            f"expected one vector per input"
        )
    if matrix.shape[1] == 0:
        raise EmbeddingContractError(f"{who}: returned empty vectors")
    finite = np.isfinite(matrix)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise EmbeddingContractError(f"{who}: vector {row} contains NaN or infinity")
    return matrix


def check_dims(matrix: np.ndarray, dims: int | None, *, who: str) -> None:
    """Raise when a declared ``dims`` differs from the delivered width."""
    if dims is not None and matrix.shape[1] != dims:
        raise DimensionMismatchError(
            f"{who}: declared dims={dims} but the backend delivered {matrix.shape[1]}-dimensional vectors"
        )


def check_text(text: object, *, where: str = "text") -> str:
    """Validate one input text (see the README: empty strings are rejected everywhere)."""
    if not isinstance(text, str):
        if isinstance(text, (list, tuple)):
            raise InvalidInputTypeError(
                f"{where} must be a string, got a {type(text).__name__}; use generate_batch() for several texts"
            )
        raise InvalidInputTypeError(f"{where} must be a string, got {type(text).__name__}")
    if not text:
        raise InvalidInputError(f"{where} is an empty string; empty texts have no meaningful embedding")
    if not text.isascii():  # a lone surrogate ("\ud800" in JSON) is no text a tokenizer can read
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"{where} is not valid Unicode: a lone surrogate {text[exc.start]!r} at position {exc.start}"
            ) from None
    return text


#: What a text is for: many models embed queries and documents differently (prompts).
InputType = Literal["query", "document"]
INPUT_TYPES: tuple[str, ...] = get_args(InputType)


def check_input_type(value: object) -> InputType | None:
    """``"query"``, ``"document"`` or None; anything else is an error naming the accepted values."""
    if value is None or value in INPUT_TYPES:
        return value  # type: ignore[return-value]
    raise InvalidInputError(f"input_type {value!r} is not one of {', '.join(map(repr, INPUT_TYPES))} (or None)")


def check_texts(texts: object) -> list[str]:
    """Validate a batch of texts and return it as a list."""
    if isinstance(texts, (str, bytes)):
        raise InvalidInputTypeError(
            "texts must be a list of strings, got a single string; use generate() for one text"
        )
    if texts is None or not isinstance(texts, (Sequence, np.ndarray)) and not hasattr(texts, "__iter__"):
        raise InvalidInputTypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    items = list(texts)
    for i, text in enumerate(items):
        check_text(text, where=f"texts[{i}]")
    return items


def to_float32_bytes(matrix: np.ndarray) -> bytes:
    """Pack a matrix as little-endian float32 bytes, row-major (the wire format)."""
    return np.ascontiguousarray(matrix, dtype="<f4").tobytes()


def from_float32_bytes(data: bytes, rows: int, cols: int) -> np.ndarray:
    """Unpack little-endian float32 bytes into a ``rows`` x ``cols`` matrix."""
    if len(data) != rows * cols * 4:
        raise EmbeddingContractError(
            f"received {len(data)} bytes for a {rows}x{cols} float32 matrix ({rows * cols * 4} expected)"
        )
    return np.frombuffer(data, dtype="<f4").reshape(rows, cols).astype(np.float32, copy=False)
