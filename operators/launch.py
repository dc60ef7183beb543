"""Start a whole pipeline on a connected Ray cluster: the worker pool (its coordinator and
workers, running) and the stream manager (which restarts the ingest of every registered
stream). Shared by ``ausm-stream serve`` (a driver that owns the pipeline) and the
cluster's own Serve application (``deploy/cluster.py``, where a detached actor owns it)."""

from __future__ import annotations

from dataclasses import dataclass

import ray

from ausm_stream.operators.pool import WorkerPool
from ausm_stream.operators.streams import StreamManagerActor, manager_name
from ausm_stream.pipeline.config import PipelineConfig


@dataclass
class Launched:
    pool: WorkerPool
    run: ray.ObjectRef
    """The pool's run (its result: the pool's status when it stops)."""
    manager: ray.actor.ActorHandle
    restored: list[str]
    """Streams of the registry whose ingest was restarted."""

    def stop(self) -> None:
        """Stop every ingest (streams stay registered) and checkpoint every stream."""
        ray.get(self.manager.stop.remote())
        self.pool.stop()
        ray.get(self.run)


def launch(cfg: PipelineConfig, bootstrap: str) -> Launched:
    pool = WorkerPool.start(cfg, bootstrap)
    run = pool.run()
    manager = StreamManagerActor.options(name=manager_name(cfg)).remote(cfg, bootstrap)
    return Launched(pool, run, manager, ray.get(manager.restored_streams.remote()))
