"""``verify_space``: does a generator still embed into the space of a bulk output?"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import EmbeddingSpaceError
from ..space import SpaceCheck, check_space
from .manifest import read_manifest

if TYPE_CHECKING:
    from ..manager import EmbeddingGeneratorManager

__all__ = ["verify_space"]


def verify_space(manager: EmbeddingGeneratorManager, name: str, output: str | os.PathLike[str]) -> SpaceCheck:
    """Check that generator ``name`` embeds into the space of the output ``output`` (its directory or
    its ``_embedding.json``).

    Raises :class:`EmbeddingSpaceError` naming every difference; returns the :class:`SpaceCheck`
    when the identity is equal and every probe is within ``MIN_PROBE_COSINE``. An output whose
    manifest is missing or invalid is a :class:`~agent_embeddings.errors.BulkOutputError`.
    """
    manifest, path = read_manifest(output)
    generator = manager.get(name)
    result = check_space(
        generator, identity=manifest.identity, probes=manifest.probes_array(), probe_texts=manifest.probes.texts,
        input_type=manifest.input_type, where=str(path),
    )
    if not result.ok:
        raise EmbeddingSpaceError(f"generator {name!r} does not embed into the space of {path}: {result.explain()}")
    return result
