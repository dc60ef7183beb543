"""``ausm-stream serve``: the pipeline with its control plane.

Brings up what the configuration names (the embedded broker, a local store and a local Ray
when unconfigured, like the demo), the worker pool, the stream manager (which restarts the
ingest of every stream in the registry) and the REST API on Ray Serve at ``api.host`` /
``api.port``, then runs until interrupted (Ctrl-C or SIGTERM). Stopping checkpoints every
stream and stops every ingest without ending its stream: the next ``serve`` on the same
broker and store resumes them all.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import serve

from ausm_stream.deploy.api import ControlPlaneApp
from ausm_stream.deploy.runtime import interrupt_on_sigterm, start_runtime
from ausm_stream.errors import ConfigError
from ausm_stream.operators.launch import launch
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.pipeline.broker import free_port
from ausm_stream.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)

APP_NAME = "ausm-stream"


@dataclass
class ControlPlane:
    """A running pipeline with its API (what :func:`control_plane` yields)."""

    url: str
    token: str
    bootstrap: str
    pool: WorkerPool
    manager: ray.actor.ActorHandle
    restored: list[str]
    """Streams of the registry whose ingest was restarted."""
    token_made: bool = False
    """The token was made at start (no ``api.token`` configured)."""

    def page_url(self) -> str:
        return f"{self.url}/?token={self.token}"


def banner(cp: ControlPlane) -> str:
    """What ``serve`` prints at start. A configured token is never printed (terminals and
    their logs outlive it); a token made at start is, since nothing else tells it."""
    page = cp.page_url() if cp.token_made else f"{cp.url}/?token=<api.token>"
    lines = [f"ausm-stream control plane: {cp.url}", f"live page:  {page}"]
    if cp.token_made:
        lines.append(f"api token (made at start; set api.token to fix one): {cp.token}")
    lines.append(f"streams restored from the registry: {len(cp.restored)}")
    return "\n".join(lines)


@contextmanager
def control_plane(cfg: PipelineConfig, log_dir: Path | None = None) -> Iterator[ControlPlane]:
    """Everything ``serve`` runs, up until the block exits (then stopped cleanly)."""
    token = cfg.api.token or secrets.token_urlsafe(24)
    port = cfg.api.port or free_port()
    check_port_free(cfg.api.host, port)
    with start_runtime(cfg, log_dir) as rt:
        running = launch(cfg, rt.bootstrap)
        try:
            serve.start(http_options={"host": cfg.api.host, "port": port})
            serve.run(ControlPlaneApp.bind(cfg, token), name=APP_NAME, route_prefix="/")
            url = f"http://{cfg.api.host}:{port}"
            log.info("control plane at %s", url)
            yield ControlPlane(
                url,
                token,
                rt.bootstrap,
                running.pool,
                running.manager,
                running.restored,
                token_made=cfg.api.token is None,
            )
        finally:
            serve.shutdown()
            running.stop()


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def check_port_free(host: str, port: int) -> None:
    """Fail before starting anything when the API's address is taken (Serve would only log
    it from its proxy actor)."""
    if not port_is_free(host, port):
        raise ConfigError(
            f"api.host/api.port {host}:{port} is taken or not this machine's; set api.port to "
            "a free port (0 = any free one)"
        )


def serve_forever(cfg: PipelineConfig) -> None:
    with control_plane(cfg) as cp:
        interrupt_on_sigterm()
        print(banner(cp), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping: checkpointing every stream", flush=True)
