"""The driver's handle on a pipeline's workers: a :class:`~.coordinator.Coordinator` actor.

``WorkerPool.start`` creates the coordinator (a named Ray actor), which starts the
workers; ``run`` returns the reference of the coordinator's run, whose result is the pool's
status (:class:`~.status.PoolStatus`). Workers are independent processes: on a CPU, one
worker per core steps more frames than one worker with a lane per core, whose threads take
turns on Python's GIL.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray

from ausm_stream.operators.coordinator import CoordinatorActor, coordinator_name
from ausm_stream.operators.status import PoolStatus, Preview, StreamStatus
from ausm_stream.pipeline.config import PipelineConfig


@dataclass
class WorkerPool:
    cfg: PipelineConfig
    coordinator: ray.actor.ActorHandle

    @classmethod
    def start(cls, cfg: PipelineConfig, bootstrap: str, workers: int | None = None) -> WorkerPool:
        """Workers on the connected Ray cluster (``worker.count``, or ``workers``)."""
        handle = CoordinatorActor.options(name=coordinator_name(cfg)).remote(
            cfg, bootstrap, workers
        )
        ray.get(handle.current_assignment.remote())  # started, or its error raised here
        return cls(cfg, handle)

    @property
    def partitions(self) -> list[list[int]]:
        """Each worker's partitions, in worker order."""
        return list(self.assignment().values())

    def assignment(self) -> dict[str, list[int]]:
        return ray.get(self.coordinator.current_assignment.remote())

    def run(
        self,
        until_ended: set[str] | None = None,
        idle_timeout_s: float | None = None,
        max_seconds: float | None = None,
    ) -> ray.ObjectRef:
        """Start every worker's loop (see ``SegmentationWorker.run``); a worker waits only for
        the ended streams it owns. The reference's result is the pool's status."""
        return self.coordinator.run.remote(
            until_ended=until_ended, idle_timeout_s=idle_timeout_s, max_seconds=max_seconds
        )

    def status(self) -> PoolStatus:
        return ray.get(self.coordinator.status.remote())

    def health(self, timeout_s: float = 10.0) -> dict[str, str]:
        """Per worker, ``ok`` or what is wrong (``Coordinator.health``: heartbeats)."""
        return ray.get(self.coordinator.health.remote(), timeout=timeout_s)

    def preview(self, stream_id: str) -> Preview | None:
        return ray.get(self.coordinator.preview.remote(stream_id))

    def stream_status(self, stream_id: str) -> StreamStatus | None:
        return ray.get(self.coordinator.stream_status.remote(stream_id))

    def add_worker(self) -> str:
        return ray.get(self.coordinator.add_worker.remote())

    def remove_worker(self, name: str) -> None:
        ray.get(self.coordinator.remove_worker.remote(name))

    def workers(self) -> dict[str, ray.actor.ActorHandle]:
        return ray.get(self.coordinator.worker_handles.remote())

    def stop(self) -> None:
        ray.get(self.coordinator.stop.remote())

    def kill(self) -> None:
        """End the workers and the coordinator (no restarts)."""
        ray.get(self.coordinator.kill.remote())
        ray.kill(self.coordinator, no_restart=True)
