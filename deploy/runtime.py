"""Bring up what a configuration names: the embedded broker or external Kafka, local or
remote Ray, and the topics. Shared by ``ausm-stream demo`` and ``ausm-stream run``."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import ray

from ausm_stream.errors import ConfigError
from ausm_stream.pipeline import kafka
from ausm_stream.pipeline.broker import MEMORY, EmbeddedBroker, s3_storage
from ausm_stream.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    cfg: PipelineConfig
    bootstrap: str
    broker: EmbeddedBroker | None = None

    def close(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def local_cpus(cfg: PipelineConfig) -> int:
    """CPUs of a local Ray: ``ray.num_cpus``, else this machine's, and room for the workers."""
    w = cfg.worker
    need = w.cpus * max(w.count, 1)
    cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, need)
    if cpus < need:
        raise ConfigError(
            f"the workers need {need} CPUs (worker.cpus={w.cpus}, worker.count={w.count}) "
            f"but ray.num_cpus={cpus}: they would never start"
        )
    return cpus


def embedded_broker(cfg: PipelineConfig, log_file: Path | None) -> EmbeddedBroker:
    """The embedded broker ``kafka.embedded_log`` asks for, creating the topics again after a
    restart (with a log in memory, they are gone)."""
    storage, env = MEMORY, {}
    if cfg.kafka.embedded_log == "store":
        store = cfg.storage
        if not store.url.startswith("s3://"):
            raise ConfigError(
                "kafka.embedded_log 'store' keeps the embedded broker's log in the S3 bucket "
                f"of storage.url, which is {store.url!r}: use an s3:// store, or "
                "kafka.embedded_log 'memory'"
            )
        bucket = store.url.removeprefix("s3://").split("/", 1)[0]
        storage, env = s3_storage(
            bucket, store.endpoint, store.access_key, store.secret_key, store.region
        )
    broker = EmbeddedBroker(log_file=log_file, storage=storage, env=env)
    broker.on_restart = lambda: kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    return broker


def start_runtime(cfg: PipelineConfig, log_dir: Path | None = None) -> Runtime:
    cpus = local_cpus(cfg) if cfg.ray.address == "local" else None  # fail before starting
    broker = None
    if cfg.kafka.bootstrap == "embedded":
        broker = embedded_broker(cfg, log_dir / "broker.log" if log_dir else None).start()
        bootstrap = broker.bootstrap
    else:
        bootstrap = cfg.kafka.bootstrap
    runtime = Runtime(cfg, bootstrap, broker)
    try:
        kafka.ensure_topics(cfg.kafka, bootstrap)
        if cfg.ray.address == "local":
            ray.init(
                num_cpus=cpus,
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            ray.init(address=cfg.ray.address, log_to_driver=False)
    except BaseException:
        runtime.close()
        raise
    return runtime


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM (how Kubernetes and service managers stop a process) into the
    KeyboardInterrupt that Ctrl-C raises, so both stop cleanly and checkpoint. Call it after
    ``ray.init``, which installs a SIGTERM handler of its own."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
