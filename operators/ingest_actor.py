"""Ingest as a Ray actor: :class:`~ausm_stream.pipeline.ingest.IngestJob` runs in a process of
its own, restarted by Ray after a crash (``pipeline/`` knows nothing of Ray)."""

from __future__ import annotations

import ray

from ausm_stream.pipeline.ingest import IngestJob


def ingest_actor() -> type:
    """:class:`IngestJob` as a Ray actor (I/O bound: no CPU reserved; ``stop``, ``prompt``
    and ``report`` stay callable while ``run`` runs). Ray restarts it after a crash and
    retries its ``run``, which resumes after the last frame produced."""
    return ray.remote(num_cpus=0, max_concurrency=4, max_restarts=-1, max_task_retries=-1)(
        IngestJob
    )
