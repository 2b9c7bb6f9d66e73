"""The local engine: stream the corpus shard by shard through one process's generator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .job import Job, Progress, process_shard

if TYPE_CHECKING:
    from ..manager import EmbeddingGeneratorManager

__all__ = ["run_local"]


def run_local(job: Job, manager: EmbeddingGeneratorManager, done: set[int], progress: Progress) -> int:
    """Embed and write every shard not in ``done``; returns how many shards the input makes."""
    count = 0
    for shard in job.corpus.shards(job.shard_rows):
        count = shard.index + 1
        if shard.index not in done:
            process_shard(job, manager, shard, progress.update)
    return count
