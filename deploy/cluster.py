"""The control plane as a Serve application that a Ray cluster deploys itself: what the
Helm chart's RayService runs (KubeRay's ``serveConfigV2``)::

    applications:
      - name: ausm-stream
        import_path: ausm_stream.deploy.cluster:app
        args: {config: /etc/ausm-stream/pipeline.yaml}

``app`` reads the configuration (the file, then ``AUSM_SECTION__KEY`` variables: the chart
sets the storage keys and ``api.token`` from a Secret), makes sure the pipeline runs, and
returns the API's deployment. The pipeline (worker pool and stream manager) belongs to a
detached actor, :class:`Pipeline`, named after the frames topic: a redeployed or
restarted API replica finds the running pipeline instead of starting a second one, and if
that actor's process dies, Ray restarts it, which starts the pipeline again from the
checkpoints and the stream registry (as a restarted ``ausm-stream serve`` does).
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray import serve

from ausm_stream.deploy.api import ControlPlaneApp
from ausm_stream.errors import ConfigError
from ausm_stream.operators.launch import launch
from ausm_stream.pipeline import kafka
from ausm_stream.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)


class Pipeline:
    """Owns a running pipeline on the cluster (see the module docstring)."""

    def __init__(self, cfg: PipelineConfig) -> None:
        kafka.ensure_topics(cfg.kafka, cfg.kafka.bootstrap)
        self.running = launch(cfg, cfg.kafka.bootstrap)
        log.info("pipeline started; %d streams restored", len(self.running.restored))

    def restored(self) -> list[str]:
        return self.running.restored

    def stop(self) -> None:
        """Checkpoint every stream and stop every ingest (before removing the actor)."""
        self.running.stop()


PipelineActor = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)(Pipeline)


def pipeline_name(cfg: PipelineConfig) -> str:
    return f"ausm-pipeline:{cfg.kafka.frames_topic}"


def cluster_token(cfg: PipelineConfig) -> str:
    """The API token, once the configuration is checked for what a cluster deployment cannot
    do without: a real broker, shared storage, a token that every API replica shares."""
    if cfg.kafka.bootstrap == "embedded":
        raise ConfigError("kafka.bootstrap is 'embedded': a cluster needs the Kafka servers")
    if cfg.storage.url.startswith("file://"):
        raise ConfigError(
            f"storage.url {cfg.storage.url!r} is a local folder: pods need shared storage "
            "(s3://bucket/prefix)"
        )
    if not cfg.api.token:
        raise ConfigError("api.token is not set: give it with AUSM_API__TOKEN (from a Secret)")
    if cfg.api.metrics_token == cfg.api.token:
        raise ConfigError(
            "api.metrics_token equals api.token: the scraper's token must open /metrics only"
        )
    return cfg.api.token


def start(cfg: PipelineConfig) -> ray.actor.ActorHandle:
    """The cluster's pipeline actor, started if it is not running yet."""
    handle = PipelineActor.options(
        name=pipeline_name(cfg), lifetime="detached", get_if_exists=True
    ).remote(cfg)
    ray.get(handle.restored.remote())  # started (or its error raised here)
    return handle


def app(args: dict[str, Any]) -> serve.Application:
    """Serve's application builder. ``args``: ``config``, the pipeline YAML's path;
    ``api_replicas``, how many API replicas (default 1); ``api_resource``, a custom Ray
    resource each replica takes one of: the chart gives each API pod one, so that every
    API pod holds a replica, and so a Serve proxy, and its probes find the API there."""
    cfg = PipelineConfig.load(args.get("config"))
    token = cluster_token(cfg)
    start(cfg)
    resource = args.get("api_resource")
    actor: dict[str, Any] = {"num_cpus": 0, **({"resources": {resource: 1}} if resource else {})}
    replicas = int(args.get("api_replicas", 1))
    return ControlPlaneApp.options(num_replicas=replicas, ray_actor_options=actor).bind(cfg, token)
