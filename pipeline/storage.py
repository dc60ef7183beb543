"""Object storage behind one small interface: a local directory or S3 / MinIO.

Keys are ``/``-separated paths under the store's root (``checkpoints/cam-7/latest.json``).
``put_atomic`` is for small objects that readers must never see half-written (manifests):
a local file is written beside and renamed over; an S3 PUT is atomic by itself.

:meth:`ObjectStore.arrow_fs` gives the ``pyarrow.fs`` filesystem and base path of the same
place, so Parquet datasets land next to the checkpoints and analysts read both alike.

Outages: every S3 request has bounded timeouts and a few retries inside the client
(``storage.timeout_s``, ``storage.request_retries``), so a store that stops answering fails
a call in seconds instead of blocking its caller for minutes. What then fails is a
:func:`is_store_error`; callers keep what they were writing and try again after a
:class:`Backoff`, and report to a :class:`ServiceHealth` (the worker's status).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pyarrow.fs as pafs

from ausm_stream.errors import ConfigError
from ausm_stream.pipeline.config import StorageConfig

if TYPE_CHECKING:
    import urllib3

log = logging.getLogger(__name__)


@functools.cache
def _store_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OSError]  # files, sockets, pyarrow.fs (ArrowIOError)
    try:
        from minio.error import MinioException
        from urllib3.exceptions import HTTPError

        types += [MinioException, HTTPError]  # S3 answers an error; no answer at all
    except ImportError:  # pragma: no cover (minio is a dependency)
        pass
    return tuple(types)


def is_store_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the object store failing (unreachable, timing out, answering an
    error), which a later try may not meet, rather than a bug of the caller's."""
    return isinstance(exc, _store_error_types())


class Backoff:
    """When to try a failing store call again: ``initial_s`` after the first failure,
    doubling with each further one, at most ``max_s``; back to the start after a success."""

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.clock = clock
        self.failures = 0
        """Failures in a row."""
        self._next = 0.0

    @classmethod
    def of(cls, cfg: StorageConfig) -> Backoff:
        return cls(cfg.retry_initial_s, cfg.retry_max_s)

    def ready(self) -> bool:
        """The wait after the last failure is over (always, without failures)."""
        return self.clock() >= self._next

    def wait_s(self) -> float:
        """Seconds until :meth:`ready`."""
        return max(0.0, self._next - self.clock())

    def failed(self) -> float:
        """Note a failure; returns the wait before the next try."""
        delay = min(self.max_s, self.initial_s * 2 ** min(self.failures, 30))
        self.failures += 1
        self._next = self.clock() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self._next = 0.0


class ServiceHealth:
    """A worker's failed calls to a service (the object store, the Kafka brokers), for its
    status: how many failed, and since when the service has been failing (the outage ends
    with the next call that succeeds). Shared by the step loop and the checkpoint writer's
    thread."""

    def __init__(
        self, service: str = "object store", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.service = service
        self.clock = clock
        self.errors = 0
        self.last_error: str | None = None
        self._failing_since: float | None = None
        self._lock = threading.Lock()

    def failed(
        self, what: str, exc: BaseException, retry_in_s: float, since: float | None = None
    ) -> None:
        """``since``: when the failure began, if before now (a call that hung)."""
        with self._lock:
            self.errors += 1
            self.last_error = f"{what}: {type(exc).__name__}: {exc}"
            if self._failing_since is None:
                self._failing_since = self.clock() if since is None else since
        log.warning(
            "%s: %s failed (%s: %s); kept, tried again in %.1f s",
            self.service,
            what,
            type(exc).__name__,
            exc,
            retry_in_s,
        )

    def ok(self) -> None:
        with self._lock:
            if self._failing_since is None:
                return
            lasted = self.clock() - self._failing_since
            self._failing_since = None
        log.warning("%s: answering again after %.1f s of failures", self.service, lasted)

    @property
    def outage_s(self) -> float:
        """Seconds since the service started failing; 0 while it answers."""
        with self._lock:
            since = self._failing_since
        return 0.0 if since is None else self.clock() - since


class ObjectStore(ABC):
    url: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; ``KeyError`` if there is none."""

    @abstractmethod
    def list(self, prefix: str = "", recursive: bool = True) -> list[str]:
        """Keys under ``prefix``, sorted; without ``recursive``, only those in the folder the
        prefix ends in (``checkpoints/a/`` lists ``checkpoints/a/x``, not ``checkpoints/a/b/x``)."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        """(pyarrow filesystem, base path) of the store's root."""

    def put_atomic(self, key: str, data: bytes) -> None:
        self.put(key, data)

    def exists(self, key: str) -> bool:
        try:
            self.get(key)
        except KeyError:
            return False
        return True


class FileStore(ObjectStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise ConfigError(f"object key {key!r} escapes the store root")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def put_atomic(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def list(self, prefix: str = "", recursive: bool = True) -> list[str]:
        # Walk only the prefix's folder: the store also holds the whole Parquet dataset.
        top = self._path(prefix.rpartition("/")[0]) if "/" in prefix else self.root
        if not top.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in (top.rglob("*") if recursive else top.iterdir())
            if p.is_file()
            and not p.name.startswith(".")
            and str(p.relative_to(self.root)).startswith(prefix)
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), str(self.root)


class S3Store(ObjectStore):
    """S3 or MinIO through the ``minio`` client (and ``pyarrow.fs.S3FileSystem`` for data)."""

    def __init__(self, cfg: StorageConfig) -> None:
        from minio import Minio

        parsed = urlparse(cfg.url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if not self.bucket:
            raise ConfigError(f"storage.url {cfg.url!r} names no bucket (s3://bucket/prefix)")
        endpoint = urlparse(cfg.endpoint) if cfg.endpoint else urlparse("https://s3.amazonaws.com")
        self.cfg = cfg
        self.secure = endpoint.scheme == "https"
        self.endpoint_netloc = endpoint.netloc
        self.client = Minio(
            endpoint.netloc,
            access_key=cfg.access_key,
            secret_key=cfg.secret_key,
            secure=self.secure,
            region=cfg.region,
            http_client=_http_client(cfg),
        )
        self.url = cfg.url
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, self._key(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise KeyError(key) from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def list(self, prefix: str = "", recursive: bool = True) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        objects = self.client.list_objects(self.bucket, prefix=base + prefix, recursive=recursive)
        return sorted(o.object_name[len(base) :] for o in objects if not o.is_dir)

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, self._key(key))

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        fs = pafs.S3FileSystem(
            access_key=self.cfg.access_key,
            secret_key=self.cfg.secret_key,
            endpoint_override=self.endpoint_netloc if self.cfg.endpoint else None,
            scheme="https" if self.secure else "http",
            region=self.cfg.region,
            connect_timeout=self.cfg.timeout_s,
            request_timeout=self.cfg.timeout_s,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(
                max_attempts=self.cfg.request_retries + 1
            ),
        )
        return fs, f"{self.bucket}/{self.prefix}".rstrip("/")


def _http_client(cfg: StorageConfig) -> urllib3.PoolManager:
    """minio's own client, with bounded timeouts and retries (with minio's defaults, 300 s to
    connect and to read and 5 retries, one call to a black-holed endpoint could hang for half
    an hour)."""
    import certifi
    import urllib3

    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=cfg.timeout_s, read=cfg.timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=cfg.request_retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )


def open_store(cfg: StorageConfig) -> ObjectStore:
    parsed = urlparse(cfg.url)
    if parsed.scheme == "file":
        path = parsed.netloc + parsed.path  # file://./rel and file:///abs both work
        return FileStore(path or ".")
    if parsed.scheme == "s3":
        return S3Store(cfg)
    raise ConfigError(f"storage.url {cfg.url!r}: use file:///path or s3://bucket/prefix")
