"""Several SegmentationWorkers sharing one frames topic.

Each worker owns a contiguous range of the topic's partitions, handed out when the pool
starts (static assignment: the coordinator of the multiple-workers work will keep ranges
sticky and move them when workers come and go). A stream lives on the partition its key
hashes to (:func:`~ausm_stream.pipeline.kafka.partition_for`), so each stream has exactly one
worker and its frames stay in order. Workers are independent processes: on a CPU, one worker
per core steps more frames than one worker with a lane per core, whose threads take turns on
Python's GIL.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray

from ausm_stream.errors import ConfigError
from ausm_stream.operators.worker import start_worker
from ausm_stream.pipeline import kafka
from ausm_stream.pipeline.config import PipelineConfig

UTILISATION = ("run_seconds", "step_seconds", "cpu_seconds")


def split_partitions(partitions: int, workers: int) -> list[list[int]]:
    """Contiguous ranges, as even as possible: 8 partitions over 3 workers give
    [0, 1, 2], [3, 4, 5], [6, 7]."""
    if not 1 <= workers <= partitions:
        raise ValueError(f"cannot split {partitions} partitions over {workers} workers")
    base, extra = divmod(partitions, workers)
    ranges, start = [], 0
    for i in range(workers):
        end = start + base + (i < extra)
        ranges.append(list(range(start, end)))
        start = end
    return ranges


def worker_count(cfg: PipelineConfig, cluster_cpus: int) -> int:
    """``worker.count``, or as many workers as the cluster's CPUs hold (``count: 0``)."""
    w, partitions = cfg.worker, cfg.kafka.partitions
    if w.count == 0:
        return max(1, min(partitions, cluster_cpus // max(w.cpus, 1)))
    if w.count > partitions:
        raise ConfigError(
            f"worker.count={w.count} is more than kafka.partitions={partitions}: "
            "a worker without partitions would have nothing to do"
        )
    if w.count * w.cpus > cluster_cpus:
        raise ConfigError(
            f"worker.count={w.count} x worker.cpus={w.cpus} needs {w.count * w.cpus} CPUs; "
            f"the Ray cluster has {cluster_cpus}, so some workers would never start"
        )
    return w.count


def owned_streams(stream_ids: set[str], partitions: list[int], cfg: PipelineConfig) -> set[str]:
    """The streams among ``stream_ids`` whose frames go to one of ``partitions``."""
    mine = set(partitions)
    return {s for s in stream_ids if kafka.partition_for(s, cfg.kafka.partitions) in mine}


def merge_summaries(summaries: list[dict]) -> dict:
    """One summary for the pool: every stream (each is on one worker), dead letters summed,
    and each worker's partitions, streams and utilisation under ``workers``."""
    return {
        "model_version": summaries[0]["model_version"],
        "dead_letters": sum(s["dead_letters"] for s in summaries),
        "workers": [
            {
                "partitions": s["partitions"],
                "streams": sorted(s["streams"]),
                **{k: s[k] for k in UTILISATION},
            }
            for s in summaries
        ],
        "streams": dict(sorted(kv for s in summaries for kv in s["streams"].items())),
    }


@dataclass
class WorkerPool:
    cfg: PipelineConfig
    actors: list[ray.actor.ActorHandle]
    partitions: list[list[int]]

    @classmethod
    def start(cls, cfg: PipelineConfig, bootstrap: str) -> WorkerPool:
        """Workers on the connected Ray cluster, each reserving ``worker.cpus`` cores."""
        cpus = int(ray.cluster_resources().get("CPU", 0))
        ranges = split_partitions(cfg.kafka.partitions, worker_count(cfg, cpus))
        return cls(cfg, [start_worker(cfg, bootstrap, r) for r in ranges], ranges)

    def run(
        self,
        until_ended: set[str] | None = None,
        idle_timeout_s: float | None = None,
        max_seconds: float | None = None,
    ) -> list[ray.ObjectRef]:
        """Start every worker's loop (see ``SegmentationWorker.run``); a worker waits only for
        the ended streams it owns. :func:`merge_summaries` of the results is the pool's."""
        return [
            actor.run.remote(
                until_ended=None
                if until_ended is None
                else owned_streams(until_ended, self.partitions[i], self.cfg),
                idle_timeout_s=idle_timeout_s,
                max_seconds=max_seconds,
            )
            for i, actor in enumerate(self.actors)
        ]

    def summary(self) -> dict:
        return merge_summaries(ray.get([a.summary.remote() for a in self.actors]))

    def stop(self) -> None:
        ray.get([a.stop.remote() for a in self.actors])

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
