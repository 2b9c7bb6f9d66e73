"""The Ray engine: the same shards, embedded by a Ray Data actor pool across a cluster.

Ray does the distribution: ``ray.data`` holds one row per pending shard, ``map_batches`` hands
them to a pool of ``workers`` actors (each builds its generator once from the subject spec).
Each actor reads its own shard from the input and writes it into the snapshot being built
(both on storage every node sees), exactly as the local engine does, so the layout, the
manifest and resuming are the same. Nothing of Ray's global state is changed: the options
below belong to this job's dataset (its own copy of the ``DataContext``) and operator.

Failures, by kind:

* **A node or an actor is lost** (SIGKILL, OOM, a machine gone): Ray Data's actor pool
  restarts the actor and Ray Core runs its shard again (the pool's defaults,
  ``max_restarts=-1``, ``max_task_retries=-1``). A shard is idempotent (written under a
  temporary name, then renamed), so running it twice writes the same file once.
* **A transient backend error** (a :class:`~agent_embeddings.errors.BackendError` whose
  ``retryable`` is true: unavailable, timeout, rate limited), after the spec's own retries:
  the actor runs the shard again, up to :data:`MAX_SHARD_RETRIES` times, matched by type.
* **Any other error of ours** (bad input, a bad spec, a model a node cannot load): the actor
  returns the exception object itself as the shard's result (pickled), and the driver raises
  it: the caller gets the very ``CorpusError`` with its one-line message. Raised inside the
  actor, it would reach the driver only as text inside Ray's ``UserCodeException`` (a pickled
  exception loses its ``__cause__``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import time
from pathlib import Path

import numpy as np

from .._deps import require
from ..errors import AgentEmbeddingsError, BackendError
from .job import Job, Progress, process_shard
from .shard import ShardResult

__all__ = ["MAX_SHARD_RETRIES", "run_ray"]

log = logging.getLogger("agent_embeddings.bulk")

#: runs of one shard after its first, for a transient backend error
MAX_SHARD_RETRIES = 3
#: seconds before the first rerun of a shard (doubled for each next one)
RETRY_BACKOFF_S = 1.0


class ShardEmbedder:
    """A Ray Data actor: builds the generator once, then embeds and writes the shards it is given.

    Each output row is a shard's result (JSON) or the error of ours that stopped it (pickled).
    """

    def __init__(self, job: Job) -> None:
        from ..manager import EmbeddingGeneratorManager

        self.job = job
        self.failed: AgentEmbeddingsError | None = None
        try:
            self.manager = EmbeddingGeneratorManager.from_subject_spec(job.spec or {})
            self.manager.warm_up([job.name])
        except AgentEmbeddingsError as exc:  # e.g. a model this node cannot load: said once, by the driver
            self.failed = exc

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results, errors = [], []
        for index in batch["shard"]:
            try:
                if self.failed is not None:
                    raise self.failed
                results.append(json.dumps(self._shard(int(index)).to_json(), default=str))
                errors.append(b"")
            except AgentEmbeddingsError as exc:
                results.append("")
                errors.append(pickle.dumps(exc))
        return {"result": np.array(results, dtype=object), "error": np.array(errors, dtype=object)}

    def _shard(self, index: int) -> ShardResult:
        for attempt in range(MAX_SHARD_RETRIES + 1):
            try:
                shard = self.job.corpus.read_shard(index, self.job.shard_rows)
                return process_shard(self.job, self.manager, shard)
            except BackendError as exc:
                if not exc.retryable or attempt == MAX_SHARD_RETRIES:
                    raise
                log.warning("bulk: shard %d: %s; running it again (%d of %d)", index, exc, attempt + 1,
                            MAX_SHARD_RETRIES)
                time.sleep(RETRY_BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")  # the loop returns or raises


def plan_shards(job: Job) -> int:
    """How many shards the input makes (Parquet: footers; JSON Lines/CSV: one counting pass)."""
    return job.corpus.shard_count(job.shard_rows)


def _for_workers(job: Job) -> Job:
    """The job with absolute paths: a Ray worker's working directory is its node's, not the driver's.
    (An input in a pyarrow filesystem travels with its filesystem, pickled.)"""
    corpus = job.corpus
    if corpus.filesystem is None:
        corpus = dataclasses.replace(corpus, path=Path(corpus.path).absolute(),
                                     files=tuple(Path(f).absolute() for f in corpus.files))
    return dataclasses.replace(job, corpus=corpus, output=job.output.absolute())


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
    the local cluster's head; ``HOST:PORT``: a cluster's GCS), else starts a local Ray for the
    job and stops it after.
    """
    ray = require("ray", "ray", who="agent-embeddings bulk --engine ray")
    require("ray.data", "ray", who="agent-embeddings bulk --engine ray")
    from ray.data import ActorPoolStrategy

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
        items = ray.data.from_items([{"shard": i} for i in pending], override_num_blocks=len(pending))
        items.context.enable_progress_bars = False  # this dataset's copy: ours counts rows, Ray's would draw over it
        embedded = items.map_batches(
            ShardEmbedder, fn_constructor_args=(_for_workers(job),), batch_size=1,
            compute=ActorPoolStrategy(size=size), num_cpus=1, num_gpus=gpus_per_worker or None,
        )
        for row in embedded.iter_rows():
            if row["error"]:
                raise pickle.loads(row["error"])  # our own error, as the actor raised it
            result = ShardResult(**json.loads(row["result"]))
            progress.update(result.rows + result.skipped)
    finally:
        if started:
            ray.shutdown()
    return count
