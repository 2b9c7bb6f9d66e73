"""The local engine: stream the corpus shard by shard through one process's generator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .job import Job, Progress, process_shard
from .shard import ShardResult

if TYPE_CHECKING:
    from ..manager import EmbeddingGeneratorManager

__all__ = ["run_local"]


def run_local(
    job: Job, manager: EmbeddingGeneratorManager, done: set[int], progress: Progress
) -> tuple[list[ShardResult], int]:
    """Embed every shard not in ``done``; returns the new shards' results and the shard count."""
    results: list[ShardResult] = []
    count = 0
    for shard in job.corpus.shards(job.shard_rows):
        count = shard.index + 1
        if shard.index in done:
            continue
        results.append(process_shard(job, manager, shard, progress.update))
    return results, count
