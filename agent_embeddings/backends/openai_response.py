"""Parsing an OpenAI-compatible embeddings response: vectors placed by ``index`` (base64 float32 or
lists of numbers), the usage, and a contract error for every malformed answer."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from ..errors import BackendError, EmbeddingContractError
from ..redaction import redact

__all__ = ["decode_embeddings"]


def decode_embeddings(content: bytes, rows: int, *, where: str) -> tuple[np.ndarray, int | None]:
    """The ``rows`` x dims float32 matrix of a response body, and its ``usage.prompt_tokens`` if any."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise BackendError(f"{where}: the response is not valid JSON ({_preview(content)})") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise EmbeddingContractError(f"{where}: the response has no 'data' list ({_preview(content)})")
    if len(data) != rows:
        raise EmbeddingContractError(f"{where}: returned {len(data)} embeddings for {rows} inputs")
    vectors: list[np.ndarray | None] = [None] * rows
    for pos, item in enumerate(data):
        index = item.get("index", pos) if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < rows or vectors[index] is not None:
            raise EmbeddingContractError(f"{where}: data[{pos}] has a missing, duplicate or invalid index {index!r}")
        vectors[index] = _vector(item.get("embedding"), where, pos)
    widths = {v.shape[0] for v in vectors}  # type: ignore[union-attr]
    if len(widths) != 1:
        raise EmbeddingContractError(f"{where}: returned vectors of unequal lengths {sorted(widths)}")
    usage = body.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return np.stack(vectors), (tokens if isinstance(tokens, int) else None)  # type: ignore[arg-type]


def _vector(embedding: Any, where: str, pos: int) -> np.ndarray:
    if isinstance(embedding, str):  # base64 of little-endian float32
        try:
            packed = base64.b64decode(embedding, validate=True)
        except (binascii.Error, ValueError):
            raise EmbeddingContractError(f"{where}: data[{pos}].embedding is not valid base64") from None
        if not packed or len(packed) % 4:
            raise EmbeddingContractError(f"{where}: data[{pos}].embedding is {len(packed)} bytes, not float32s")
        return np.frombuffer(packed, dtype="<f4")
    if isinstance(embedding, list) and embedding:  # a server that ignores encoding_format
        try:
            return np.asarray(embedding, dtype=np.float32)
        except (TypeError, ValueError):
            pass
    raise EmbeddingContractError(f"{where}: data[{pos}].embedding is neither base64 nor a list of numbers")


def _preview(content: bytes) -> str:
    # Redacted before it is cut: a secret cut in two would not be recognised.
    text = redact(content[:4096].decode("utf-8", "replace"))[:80]
    return f"starts with {text!r}" if content else "empty body"
