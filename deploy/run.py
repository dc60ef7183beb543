"""``ausm-stream run``: the pipeline against the services a configuration names.

Starts a pool of SegmentationWorker actors that share the partitions of the frames topic
(``worker.count``; by default one per ``worker.cpus`` cores of the cluster), and optionally
ingest actors for ``--source ID=URL`` streams, then runs until interrupted
(Ctrl-C) or, with ``--idle-timeout``, until nothing has arrived for that long. Ingest that
runs next to the cameras uses ``ausm-stream ingest`` instead.
"""

from __future__ import annotations

import json
import logging

import ray

from ausm_stream.deploy.runtime import start_runtime
from ausm_stream.errors import ConfigError
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.operators.worker import weights_info
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.ingest import ingest_actor

log = logging.getLogger(__name__)


def parse_sources(items: list[str]) -> dict[str, str]:
    sources = {}
    for item in items:
        sid, sep, url = item.partition("=")
        if not sep or not sid or not url:
            raise ConfigError(f"--source {item!r}: use STREAM_ID=URL")
        sources[sid] = url
    return sources


def run_pipeline(
    cfg: PipelineConfig, sources: dict[str, str], idle_timeout_s: float | None
) -> dict:
    model_cfg, version = weights_info(cfg.model.weights)
    size = model_cfg.image_size
    log.info("model %s, frames topic %s", version, cfg.kafka.frames_topic)
    with start_runtime(cfg) as rt:
        pool = WorkerPool.start(cfg, rt.bootstrap)
        log.info("workers and their partitions: %s", pool.assignment())
        actor = ingest_actor()
        jobs = [
            actor.remote(sid, url, size, cfg.kafka, rt.bootstrap, cfg.ingest)
            for sid, url in sources.items()
        ]
        for job in jobs:
            job.run.remote()
        run = pool.run(idle_timeout_s=idle_timeout_s)
        try:
            summary = ray.get(run)
        except KeyboardInterrupt:
            pool.stop()
            for job in jobs:
                job.stop.remote()
            summary = ray.get(run)
    print(json.dumps(summary, indent=2))
    return summary
