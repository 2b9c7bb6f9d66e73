"""The Ray engine: the same shards, embedded by a Ray Data actor pool across a cluster.

Ray does the distribution: ``ray.data`` holds one row per pending shard, ``map_batches`` hands
them to a pool of ``workers`` actors (each builds its generator once from the subject spec),
failed map tasks are retried by Ray Data (``retried_map_errors``) and dead actors restarted by
Ray. Each actor reads its own shard from the input (shared storage on a real cluster) and
writes it to the output, exactly as the local engine does, so the layout, the manifest and
resuming are the same. No scheduler or queue of ours.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np

from .._deps import require
from .job import Job, Progress, process_shard
from .shard import ShardResult

__all__ = ["TRANSIENT_ERRORS", "run_ray"]

log = logging.getLogger("agent_embeddings.bulk")

# A shard whose generator failed with one of these (after the spec's own retries) is run again
# by Ray Data; bad input or a bad spec fails the job at once.
TRANSIENT_ERRORS = ["BackendUnavailableError", "BackendTimeoutError", "RateLimitError"]
MAX_SHARD_RETRIES = 3


class ShardEmbedder:
    """A Ray Data actor: builds the generator once, then embeds and writes the shards it is given."""

    def __init__(self, job: Job) -> None:
        from ..manager import EmbeddingGeneratorManager

        self.job = job
        self.manager = EmbeddingGeneratorManager.from_subject_spec(job.spec or {})
        self.manager.warm_up([job.name])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for index in batch["shard"]:
            shard = self.job.corpus.read_shard(int(index), self.job.shard_rows)
            results.append(json.dumps(process_shard(self.job, self.manager, shard).to_json(), default=str))
        return {"result": np.array(results, dtype=object)}


def _our_error(exc: BaseException) -> BaseException:
    """The agent-embeddings error behind a Ray failure, as a plain one-line error of its own type.

    Ray wraps a worker's exception (RayTaskError, UserCodeException) and does not always keep
    the original object; its text always ends with the original's ``module.Type: message``.
    """
    from .. import errors

    found = _RAISED.findall(str(exc))
    if found:
        kind, message = found[-1]
        error_type = getattr(errors, kind, None)
        if isinstance(error_type, type) and issubclass(error_type, errors.AgentEmbeddingsError):
            return error_type(message.strip())
    return exc


_RAISED = re.compile(r"agent_embeddings\.errors\.(\w+): (.+)")


def plan_shards(job: Job) -> int:
    """How many shards the input makes (Parquet: footers; JSON Lines/CSV: one counting pass)."""
    return job.corpus.shard_count(job.shard_rows)


def run_ray(
    job: Job,
    done: set[int],
    progress: Progress,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0,
) -> int:
    """Embed and write every shard not in ``done`` on Ray; returns how many shards the input makes.

    Uses the Ray instance this process is connected to, else connects to ``address`` (``auto``:
    the local cluster's head), else starts a local Ray for the job and stops it after.
    """
    ray = require("ray", "ray", who="agent-embeddings bulk --engine ray")
    require("ray.data", "ray", who="agent-embeddings bulk --engine ray")
    from ray.data import ActorPoolStrategy, DataContext

    count = plan_shards(job)
    pending = [i for i in range(count) if i not in done]
    if not pending:
        return count
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        size = max(1, min(workers or cpus, len(pending)))
        context = DataContext.get_current()
        saved = context.retried_map_errors, context.max_map_retries, context.enable_progress_bars
        context.retried_map_errors, context.max_map_retries = TRANSIENT_ERRORS, MAX_SHARD_RETRIES
        context.enable_progress_bars = False  # ours counts rows; Ray's would draw over it
        try:
            items = ray.data.from_items([{"shard": i} for i in pending], override_num_blocks=len(pending))
            embedded = items.map_batches(
                ShardEmbedder, fn_constructor_args=(job,), batch_size=1, compute=ActorPoolStrategy(size=size),
                num_cpus=1, num_gpus=gpus_per_worker or None,
            )
            try:
                for row in embedded.iter_rows():
                    result = ShardResult(**json.loads(row["result"]))
                    progress.update(result.rows + result.skipped)
            except Exception as exc:
                raise _our_error(exc) from exc
        finally:
            context.retried_map_errors, context.max_map_retries, context.enable_progress_bars = saved
    finally:
        if started:
            ray.shutdown()
    return count
