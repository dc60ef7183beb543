"""``ausm-stream run``: the pipeline against the services a configuration names.

Starts a pool of SegmentationWorker actors that share the partitions of the frames topic
(``worker.count``; by default one per ``worker.cpus`` cores of the cluster), and optionally
ingest actors for ``--source ID=URL`` streams, then runs until interrupted
(Ctrl-C or SIGTERM) or, with ``--idle-timeout``, until nothing has arrived for that long. Ingest
that runs next to the cameras uses ``ausm-stream ingest`` instead.

Started again on the same configuration (the same broker and object store), it resumes:
workers recover every stream from its checkpoints and ingest continues after the last frame
it produced. An interrupt checkpoints every stream where it is; a kill loses only what came
after the last checkpoints, which is replayed.
"""

from __future__ import annotations

import json
import logging

import ray

from ausm_stream.deploy.runtime import interrupt_on_sigterm, start_runtime
from ausm_stream.errors import ConfigError, InvalidInputError
from ausm_stream.model.versions import weights_info
from ausm_stream.operators.ingest_pool import IngestPlacement
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.operators.status import PoolStatus
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.ids import check_stream_id

log = logging.getLogger(__name__)


def parse_sources(items: list[str]) -> dict[str, str]:
    sources = {}
    for item in items:
        sid, sep, url = item.partition("=")
        if not sep or not sid or not url:
            raise ConfigError(f"--source {item!r}: use STREAM_ID=URL")
        try:
            sources[check_stream_id(sid)] = url
        except InvalidInputError as exc:
            raise ConfigError(f"--source {item!r}: {exc}") from None
    return sources


def run_pipeline(
    cfg: PipelineConfig, sources: dict[str, str], idle_timeout_s: float | None
) -> PoolStatus:
    """Run the pipeline until interrupted (or idle for ``idle_timeout_s``); prints the pool's
    status with each source's ingest report as JSON, and returns the status."""
    model_cfg, version = weights_info(cfg.model.weights)
    size = model_cfg.image_size
    log.info("model %s, frames topic %s", version, cfg.kafka.frames_topic)
    with start_runtime(cfg) as rt:
        interrupt_on_sigterm()  # a pod's stop checkpoints like Ctrl-C
        pool = WorkerPool.start(cfg, rt.bootstrap)
        log.info("workers and their partitions: %s", pool.assignment())
        placement = IngestPlacement(cfg, rt.bootstrap, size)
        ingests = [placement.start(sid, url) for sid, url in sources.items()]
        run = pool.run(idle_timeout_s=idle_timeout_s)
        try:
            status = ray.get(run)
        except KeyboardInterrupt:
            pool.stop()
            for ing in ingests:
                ing.stop()
            status = ray.get(run)
        for ing in ingests:  # a live source runs until stopped; a stop does not end its stream
            ing.stop()
        ingest = {
            r.stream_id: {"frames": r.frames, "reconnects": r.reconnects, "drops": r.drops}
            for r in ray.get([ing.run for ing in ingests])
        }
    print(json.dumps({**status.to_dict(), "ingest": ingest}, indent=2))
    return status
