"""Object storage behind one small interface: a local directory or S3 / MinIO.

Keys are ``/``-separated paths under the store's root (``checkpoints/cam-7/latest.json``).
``put_atomic`` is for small objects that readers must never see half-written (manifests):
a local file is written beside and renamed over; an S3 PUT is atomic by itself.

:meth:`ObjectStore.arrow_fs` gives the ``pyarrow.fs`` filesystem and base path of the same
place, so Parquet datasets land next to the checkpoints and analysts read both alike.
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from ausm_stream.errors import ConfigError
from ausm_stream.pipeline.config import StorageConfig


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
        )
        return fs, f"{self.bucket}/{self.prefix}".rstrip("/")


def open_store(cfg: StorageConfig) -> ObjectStore:
    parsed = urlparse(cfg.url)
    if parsed.scheme == "file":
        path = parsed.netloc + parsed.path  # file://./rel and file:///abs both work
        return FileStore(path or ".")
    if parsed.scheme == "s3":
        return S3Store(cfg)
    raise ConfigError(f"storage.url {cfg.url!r}: use file:///path or s3://bucket/prefix")
