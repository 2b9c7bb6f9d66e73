"""Does a generator embed into the space of a bulk output? Its identity and its probes decide."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EmbeddingSpaceError
from ..space import INPUT_KINDS, PARTIAL_FIELDS, PROBES, InputKind, SpaceCheck, SpaceIdentity, check_space
from .manifest import Manifest, read_manifest

if TYPE_CHECKING:
    from ..base import AbstractEmbeddingGenerator
    from ..manager import EmbeddingGeneratorManager

__all__ = ["check_output_space", "embed_probes", "verify_space"]

#: what a version-1 manifest recorded of the identity, and so all that can be compared with it
_LEGACY_FIELDS = PARTIAL_FIELDS


def embed_probes(generator: AbstractEmbeddingGenerator) -> tuple[dict[InputKind, np.ndarray], SpaceIdentity]:
    """The probe sentences' vectors for every input type, then the generator's identity (after the
    probes: a remote generator learns its width and its endpoint's space on the way)."""
    probes = {
        kind: generator.embed(list(PROBES), input_type=None if kind == "none" else kind).vectors
        for kind in INPUT_KINDS
    }
    return probes, generator.space()


def check_output_space(manifest: Manifest, generator: AbstractEmbeddingGenerator, where: str) -> SpaceCheck:
    """Re-embed ``manifest``'s probes with ``generator`` and compare identities. An output of an
    earlier version recorded only part of its identity: that part is compared, the probes decide."""
    fields = None
    if manifest.legacy:
        fields = tuple(f for f in _LEGACY_FIELDS if getattr(manifest.identity, f) is not None)
    return check_space(
        generator, identity=manifest.identity, probes=manifest.probes.arrays(), probe_texts=manifest.probes.texts,
        where=where, fields=fields,
    )


def verify_space(manager: EmbeddingGeneratorManager, name: str, output: str | os.PathLike[str]) -> SpaceCheck:
    """Check that generator ``name`` embeds into the space of the output ``output`` (its directory or
    its ``_embedding.json``): the identity must be equal and the probes of every input type the
    output stored must embed to the same vectors.

    Raises :class:`EmbeddingSpaceError` saying what differs; returns the :class:`SpaceCheck`
    otherwise. An output whose manifest is missing or invalid is a
    :class:`~agent_embeddings.errors.BulkOutputError`.
    """
    manifest, path = read_manifest(output)
    check = check_output_space(manifest, manager.get(name), str(path))
    if not check.ok:
        raise EmbeddingSpaceError(f"generator {name!r} does not embed into the space of {path}: {check.explain()}")
    return check
