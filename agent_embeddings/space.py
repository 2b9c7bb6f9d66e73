"""Embedding spaces: what makes two sets of vectors comparable, and how to check it.

Vectors from different spaces must never meet in one index. A space is **what the vectors
are**, never how they are reached:

* its *identity* (:class:`SpaceIdentity`): the model (and revision), the precision that changes
  the numbers (fp32, bf16, int8), the prompt each input type is embedded with, normalization, the
  output width (and a ``dimensions`` truncation) and the sequence limit — not the provider,
  the URL, the device, the batch size or the cache. ``hf:`` knows it from its model;
  ``openai:`` and ``aios:`` take it from an endpoint that publishes one (our servers do), so
  an index built locally verifies against the same model served remotely;
* its *probes*: the vectors of a few fixed sentences, stored with an index. A model swapped
  behind an unchanged name keeps its identity but moves its probes, and only the probes can
  catch that (an endpoint that publishes no identity — OpenAI itself — is known by name only).

The short :attr:`SpaceIdentity.space_id` (``all-minilm-l6-v2-7c1f09ab``) travels wherever
vectors do: ``describe()``, ``manager.stats()``, the cache namespace, bulk manifests,
``/v1/models`` and gRPC ``Info``. ``agent-embeddings bulk`` stores identity and probes in the
``_embedding.json`` manifest of its output (:mod:`agent_embeddings.bulk.manifest`);
:meth:`EmbeddingGeneratorManager.verify_space` checks a generator against it.

>>> a = SpaceIdentity(model="sentence-transformers/all-MiniLM-L6-v2", precision="fp32", normalize=True, dims=384)
>>> a.space_id.startswith("all-minilm-l6-v2-")
True
>>> describe_differences(a, a.model_copy(update={"document_prompt": "passage: "}))
["the document prompt changed from None to 'passage: '"]
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .vectors import InputType

if TYPE_CHECKING:
    from .base import AbstractEmbeddingGenerator

__all__ = [
    "INPUT_KINDS",
    "InputKind",
    "MIN_PROBE_COSINE",
    "PROBES",
    "SpaceCheck",
    "SpaceIdentity",
    "check_space",
    "describe_differences",
    "input_kind",
    "probe_cosines",
    "remote_space",
]

# Fixed forever: a manifest's probes are only comparable with the same sentences.
PROBES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Photosynthesis converts light energy into chemical energy.",
    "Der Zug nach Berlin fährt um neun Uhr ab.",
)
# float32 vectors of one model on two machines agree far above this; another model (or another
# prompt, or int8 weights) falls below it on at least one probe; bf16 sits at its edge (0.99994 for
# all-MiniLM-L6-v2), which is why bf16 has a precision of its own in the identity.
MIN_PROBE_COSINE = 0.9999

#: what an identity known by name alone (no precision: an endpoint that publishes no space) can say
PARTIAL_FIELDS: tuple[str, ...] = ("model", "normalize", "dims", "dimensions")

InputKind = Literal["none", "query", "document"]
#: The input types a space embeds differently: plain texts, queries, documents.
INPUT_KINDS: tuple[InputKind, ...] = ("none", "query", "document")


def input_kind(input_type: InputType | None) -> InputKind:
    """``None`` -> ``"none"``; ``"query"`` and ``"document"`` as they are."""
    return "none" if input_type is None else input_type


class SpaceIdentity(BaseModel):
    """What a generator's vectors are. Equal identities (and probes) mean one embedding space.

    ``precision`` is about numbers, not engines: torch and ONNX Runtime in fp32 agree to 1e-6 and
    share ``"fp32"``; int8 weights (``"int8-r3"``: the recipe's version, since each recipe moves the
    vectors differently) move every vector, and so does bfloat16 (``"bf16"``):
    measured on all-MiniLM-L6-v2, 1,000 mixed texts, min cosine to fp32 0.99991 (probes 0.99994),
    top-10 neighbours 99.3% the same. That is a hundred times further than fp32 on two machines and
    at the very edge of ``MIN_PROBE_COSINE``, where a deeper model falls below it: so bf16 is a space
    of its own, and an index says which precision built it rather than failing on its probes. A prompt is the text an input
    type is prefixed with (for a backend that sends the input type to its server instead, the
    type's name). ``None`` where a value is not known: a remote endpoint that publishes no
    identity is known by its model name, and its probes decide.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(description="The model's canonical id, e.g. 'sentence-transformers/all-MiniLM-L6-v2'.")
    revision: str | None = Field(default=None, description="Model revision, where known.")
    precision: str | None = Field(default=None, description="'fp32', 'bf16', 'int8', ... (None: not known).")
    prompt: str | None = Field(default=None, description="Prompt of plain texts (no input type).")
    query_prompt: str | None = Field(default=None, description='Prompt of texts embedded with input_type="query".')
    document_prompt: str | None = Field(
        default=None, description='Prompt of texts embedded with input_type="document".'
    )
    normalize: bool = Field(description="Vectors have unit length.")
    dims: int | None = Field(default=None, description="Width of the vectors (None: not known yet).")
    dimensions: int | None = Field(default=None, description="Truncation asked for (Matryoshka), if any.")
    max_seq_length: int | None = Field(default=None, description="Tokens read per text, where known.")

    def prompt_for(self, kind: InputKind) -> str | None:
        return {"none": self.prompt, "query": self.query_prompt, "document": self.document_prompt}[kind]

    @property
    def space_id(self) -> str:
        """A short, stable name: the model's last path part, readable, then 8 hex digits of the whole."""
        canonical = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
        base = (self.model or "unknown").rstrip("/").rsplit("/", 1)[-1].lower()
        slug = re.sub(r"[^a-z0-9]+", "-", base).strip("-")[:40] or "model"
        return f"{slug}-{digest}"


_WHAT: dict[str, str] = {
    "model": "the model",
    "revision": "the model revision",
    "precision": "the precision",
    "prompt": "the prompt of plain texts",
    "query_prompt": "the query prompt",
    "document_prompt": "the document prompt",
    "normalize": "normalization",
    "dims": "the output width",
    "dimensions": "the truncation (dimensions)",
    "max_seq_length": "the sequence limit",
}


def describe_differences(
    stored: SpaceIdentity, current: SpaceIdentity, fields: tuple[str, ...] | None = None
) -> list[str]:
    """What changed between two identities (or in ``fields`` of them), one sentence each."""
    a, b = stored.model_dump(), current.model_dump()
    return [f"{_WHAT[key]} changed from {a[key]!r} to {b[key]!r}" for key in _WHAT
            if (fields is None or key in fields) and a[key] != b[key]]


def probe_cosines(stored: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two probe matrices of one shape (zeros when shapes differ)."""
    a = np.asarray(stored, dtype=np.float64)
    b = np.asarray(current, dtype=np.float64)
    if a.shape != b.shape:
        return np.zeros(len(a))
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(np.einsum("ij,ij->i", a, b) / np.where(norms == 0, 1.0, norms))


@dataclass(frozen=True)
class SpaceCheck:
    """The outcome of a space check: equal identity, and probes at or above ``MIN_PROBE_COSINE``
    for every input type the index stored."""

    manifest: str
    generator: str
    #: the lowest probe cosine of each input type checked ("none", "query", "document")
    cosines: Mapping[str, float] = field(default_factory=dict)
    identity_differences: tuple[str, ...] = ()

    @property
    def min_cosine(self) -> float:
        return min(self.cosines.values()) if self.cosines else 0.0

    @property
    def probes_moved(self) -> tuple[str, ...]:
        """The input types whose probes no longer embed to the stored vectors."""
        return tuple(kind for kind, cosine in self.cosines.items() if cosine < MIN_PROBE_COSINE)

    @property
    def ok(self) -> bool:
        return not self.identity_differences and not self.probes_moved and bool(self.cosines)

    def explain(self) -> str:
        """What differs, in words; ``same space`` when nothing does. "A different model" is said only
        when the identity is equal and the probes moved: otherwise the identity says what changed."""
        if self.ok:
            return f"same space (probe cosine >= {self.min_cosine:.6f})"
        parts = list(self.identity_differences)
        moved = self.probes_moved
        if moved:
            shown = ", ".join(f"{kind} {self.cosines[kind]:.6f}" for kind in moved)
            if self.identity_differences:
                parts.append(f"and the probe sentences moved (cosine {shown} < {MIN_PROBE_COSINE})")
            else:
                parts.append(
                    f"the probe sentences moved (cosine {shown} < {MIN_PROBE_COSINE}) although the identity is "
                    "the same: a different model answers behind this name"
                )
        return "; ".join(parts)


def check_space(
    generator: AbstractEmbeddingGenerator,
    *,
    identity: SpaceIdentity,
    probes: Mapping[str, np.ndarray],
    probe_texts: list[str],
    where: str,
    fields: tuple[str, ...] | None = None,
) -> SpaceCheck:
    """Re-embed the stored probes of every input type, then compare ``generator``'s identity with
    the stored one, or its ``fields`` (after the probes: a remote generator learns its width)."""
    cosines: dict[str, float] = {}
    for kind, stored in probes.items():
        current = generator.embed(probe_texts, input_type=None if kind == "none" else kind).vectors  # type: ignore[arg-type]
        cosines[kind] = float(probe_cosines(stored, current).min())
    current_identity = generator.space()
    if fields is None and (identity.precision is None or current_identity.precision is None):
        # one side is known by its model name alone (an endpoint that publishes no space, a custom
        # generator): what it cannot know is not compared, and the probes decide
        fields = PARTIAL_FIELDS
    return SpaceCheck(
        manifest=where,
        generator=generator.name or generator.provider,
        cosines=cosines,
        identity_differences=tuple(describe_differences(identity, current_identity, fields)),
    )


def remote_space(
    published: SpaceIdentity,
    *,
    normalize: bool,
    dimensions: int | None,
    sends_input_type: bool,
    server_normalizes: bool,
) -> SpaceIdentity:
    """The space a client of an endpoint that publishes ``published`` gets, after what the client
    itself does: its ``dimensions`` (a narrower width), its normalization (on top of the server's,
    unless it asks for raw vectors), and its input types (without sending them every text is a
    plain text to the server, whatever the caller said)."""
    plain = published.prompt
    return published.model_copy(update={
        "normalize": normalize or (server_normalizes and published.normalize),
        "dims": dimensions or published.dims,
        "dimensions": dimensions or published.dimensions,
        "query_prompt": published.query_prompt if sends_input_type else plain,
        "document_prompt": published.document_prompt if sends_input_type else plain,
    })


def identity_from(data: Mapping[str, Any] | None) -> SpaceIdentity | None:
    """A published identity (a ``/v1/models`` card's ``space``, an Info message), None if absent or malformed."""
    if not data:
        return None
    try:
        return SpaceIdentity.model_validate(dict(data))
    except ValueError:
        return None
