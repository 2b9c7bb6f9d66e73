"""Bulk embedding of a corpus into Parquet shards, locally or on a Ray cluster.

>>> from agent_embeddings.bulk import embed_dataset
>>> report = embed_dataset("specs/default.json", "hf-minilm", "corpus.parquet", "vectors/",
...                        text_column="text", id_column="id")          # doctest: +SKIP
>>> report.rows, report.shards, report.skipped                          # doctest: +SKIP
(25000, 3, 0)

The output is plain Parquet (``id``, ``embedding`` as ``fixed_size_list<float32>[dims]``) plus an
``_embedding.json`` manifest (which Parquet readers skip); ``manager.verify_space(name, "vectors/")`` checks that a generator
still embeds into its space. Needs the ``bulk`` extra (pyarrow); ``engine="ray"`` the ``ray`` extra.
"""

from .job import DEFAULT_SHARD_ROWS, BulkReport
from .manifest import MANIFEST, Manifest
from .run import embed_dataset

__all__ = ["DEFAULT_SHARD_ROWS", "MANIFEST", "BulkReport", "Manifest", "embed_dataset"]
