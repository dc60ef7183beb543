"""Outages on demand, for the tests and ``bench/faults.py``: an S3 endpoint that stops and
starts again on its port (:class:`Moto`), a proxy that black-holes it (:class:`StoreProxy`),
and a Kafka broker whose log outlives its process (:func:`log_keeping_broker`, its log on an
S3 endpoint such as :func:`moto_process`). Everything listens on 127.0.0.1."""

from __future__ import annotations

import selectors
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from ausm_stream.pipeline.broker import EmbeddedBroker, free_port, s3_storage


@contextmanager
def moto_process() -> Iterator[str]:
    """A moto S3 server in a process of its own, so that its requests do not take turns on
    this process's GIL with everything else here (it cannot be restarted: its buckets live
    in that process); yields its URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


class Moto:
    """A moto S3 server on a loopback port of its own that can be stopped (the port then
    refuses connections) and started again on the same port. Its buckets live in this
    process (moto's backend), so they are all still there once it is back."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server._server.server_close()  # its port refuses connections until started
            self._server = None


class StoreProxy:
    """A TCP proxy in front of an S3 endpoint that can black-hole it: during
    :meth:`black_hole` the connections open through it stop being forwarded and new ones
    are accepted and never answered (what a dead node behind a load balancer, or a
    dropped route, looks like to a client: requests hang until their timeouts), and
    :meth:`restore` forwards again (the held connections are closed)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.up = threading.Event()
        self.up.set()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def black_hole(self) -> None:
        self.up.clear()

    def restore(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            sock.close()
        self.up.set()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.restore()

    def _hold(self, sock: socket.socket) -> None:
        with self._lock:
            self._held.append(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                self._hold(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        # A selector (epoll), not select(): a busy test process has descriptors past 1024.
        ready = selectors.DefaultSelector()
        for sock in peers:
            ready.register(sock, selectors.EVENT_READ)
        try:
            while True:
                if not self.up.is_set():  # cut upstream, leave the client hanging
                    upstream.close()
                    self._hold(client)
                    return
                for key, _ in ready.select(0.1):
                    sock = key.fileobj
                    data = sock.recv(65536)
                    if not data:
                        client.close()
                        upstream.close()
                        return
                    peers[sock].sendall(data)
        except OSError:
            client.close()
            upstream.close()
        finally:
            ready.close()


def log_keeping_broker(s3_endpoint: str) -> EmbeddedBroker:
    """An embedded broker whose log lives in a fresh bucket of the S3 endpoint (moto): it
    can be stopped and started again on its port without losing a record."""
    import boto3

    bucket = f"broker-{uuid.uuid4().hex[:8]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test-secret",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    storage, env = s3_storage(bucket, s3_endpoint, "test", "test-secret", "us-east-1")
    return EmbeddedBroker(storage=storage, env=env).start()
