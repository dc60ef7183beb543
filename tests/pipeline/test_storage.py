"""Object stores: a directory and a real S3 endpoint (moto) via minio and pyarrow.fs; and
stores that fail for the outage tests (:class:`FlakyStore`, and the proxy that black-holes
an endpoint, :class:`tests.outages.StoreProxy`)."""

from __future__ import annotations

import dataclasses
import threading
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from ausm_stream.errors import ConfigError
from ausm_stream.pipeline.config import StorageConfig
from ausm_stream.pipeline.storage import Backoff, FileStore, is_store_error, open_store
from tests.conftest import s3_storage
from tests.outages import StoreProxy


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path, s3_endpoint):
    if request.param == "file":
        return open_store(StorageConfig(url=f"file://{tmp_path}/objects"))
    return open_store(s3_storage(s3_endpoint, "b-" + tmp_path.name.lower()[-20:].replace("_", "-")))


def test_put_get_list_delete(store):
    store.put("checkpoints/cam-1/00000008.safetensors", b"abc")
    store.put_atomic("checkpoints/cam-1/latest.json", b'{"frame_idx": 8}')
    store.put("checkpoints/cam-2/latest.json", b"{}")
    assert store.get("checkpoints/cam-1/latest.json") == b'{"frame_idx": 8}'
    assert store.list("checkpoints/cam-1/") == [
        "checkpoints/cam-1/00000008.safetensors",
        "checkpoints/cam-1/latest.json",
    ]
    store.delete("checkpoints/cam-1/00000008.safetensors")
    assert not store.exists("checkpoints/cam-1/00000008.safetensors")
    with pytest.raises(KeyError):
        store.get("missing")


def test_arrow_filesystem_reaches_the_same_place(store):
    fs, base = store.arrow_fs()
    fs.create_dir(f"{base}/t", recursive=True)
    pq.write_table(pa.table({"x": [1, 2, 3]}), f"{base}/t/part.parquet", filesystem=fs)
    assert "t/part.parquet" in store.list("t/")
    assert pq.read_table(f"{base}/t/part.parquet", filesystem=fs)["x"].to_pylist() == [1, 2, 3]


def test_bad_urls_and_keys(tmp_path):
    with pytest.raises(ValueError, match="use file:///path or s3://"):
        open_store(StorageConfig(url="gs://bucket"))
    with pytest.raises(ValueError, match="escapes"):
        FileStore(tmp_path).put("../outside", b"x")


def test_a_listing_without_descending_leaves_out_the_folders_below(store):
    store.put("checkpoints/a/00000008.json", b"{}")
    store.put("checkpoints/a/latest.json", b"{}")
    store.put("checkpoints/a/b/00000009.json", b"{}")  # another stream's folder, below a's
    store.put("checkpoints/ab/latest.json", b"{}")
    assert store.list("checkpoints/a/", recursive=False) == [
        "checkpoints/a/00000008.json",
        "checkpoints/a/latest.json",
    ]
    assert "checkpoints/a/b/00000009.json" in store.list("checkpoints/a/")
    assert store.list("checkpoints/none/", recursive=False) == []


# -- stores that fail -----------------------------------------------------------------------
class FlakyStore(FileStore):
    """A real :class:`FileStore` that fails on demand, as an unreachable S3 endpoint does
    (``ConnectionError``): the next ``fail_next`` calls, or every call while ``down``. Its
    ``pyarrow.fs`` (the Parquet sink's) fails its writes alike."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.down = False
        self.fail_next = 0
        self.failures = 0
        self._lock = threading.Lock()

    def check(self, op: str, key: str) -> None:
        with self._lock:
            if not (self.down or self.fail_next > 0):
                return
            self.fail_next = max(0, self.fail_next - 1)
            self.failures += 1
        raise ConnectionError(f"store unreachable ({op} {key})")

    def put(self, key: str, data: bytes) -> None:
        self.check("put", key)
        super().put(key, data)

    def put_atomic(self, key: str, data: bytes) -> None:
        self.check("put", key)
        super().put_atomic(key, data)

    def get(self, key: str) -> bytes:
        self.check("get", key)
        return super().get(key)

    def list(self, prefix: str = "", recursive: bool = True) -> list[str]:
        self.check("list", prefix)
        return super().list(prefix, recursive)

    def delete(self, key: str) -> None:
        self.check("delete", key)
        super().delete(key)

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        return pafs.PyFileSystem(FailingFS(self)), str(self.root)


class FailingFS(pafs.FileSystemHandler):
    """A local filesystem for ``pyarrow.fs`` whose writes fail while its store is down."""

    def __init__(self, store: FlakyStore) -> None:
        self.store = store
        self.local = pafs.LocalFileSystem()

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def get_type_name(self):
        return "failing"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.store.check("create_dir", path)
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self.store.check("open_output_stream", path)
        return self.local.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        raise NotImplementedError


# -- outages ---------------------------------------------------------------------------------
def test_storage_config_refuses_timeouts_and_back_offs_that_mean_nothing():
    assert StorageConfig().timeout_s == 10.0 and StorageConfig().request_retries == 2
    for bad, match in [
        ({"timeout_s": 0}, "storage.timeout_s must be positive"),
        ({"retry_initial_s": 0}, "storage.retry_initial_s must be positive"),
        ({"retry_initial_s": 5, "retry_max_s": 1}, "retry_max_s .* at least"),
        ({"request_retries": -1}, "request_retries must be >= 0"),
    ]:
        with pytest.raises(ConfigError, match=match):
            StorageConfig(**bad)


def test_back_off_doubles_to_its_cap_and_starts_over_after_a_success():
    now = [100.0]
    backoff = Backoff(0.5, 3.0, clock=lambda: now[0])
    assert backoff.ready()
    assert [backoff.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert not backoff.ready() and backoff.wait_s() == 3.0
    now[0] += 3.0
    assert backoff.ready()
    backoff.succeeded()
    assert backoff.failed() == 0.5


def test_a_black_holed_s3_endpoint_fails_each_call_within_its_timeouts(s3_endpoint):
    """Between the clients and moto, a proxy that stops answering: minio's defaults (300 s
    to connect and to read, 5 retries) held such a call for half an hour; with
    ``storage.timeout_s`` and ``request_retries`` every call fails in seconds, as a store
    error, and works again once the endpoint answers."""
    proxy = StoreProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    try:
        cfg = dataclasses.replace(
            s3_storage(proxy.url, "black-holed"), timeout_s=1.0, request_retries=1
        )
        store = open_store(cfg)
        fs, base = store.arrow_fs()
        table = pa.table({"x": [1]})
        store.put("a", b"x")
        proxy.black_hole()
        calls = {
            "put": lambda: store.put("b", b"y"),
            "get": lambda: store.get("a"),
            "list": lambda: store.list(""),
            "parquet": lambda: pq.write_table(table, f"{base}/p.parquet", filesystem=fs),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(Exception) as failed:
                call()
            assert is_store_error(failed.value), (name, failed.value)
            assert time.monotonic() - started < 20, name  # 2 attempts of 1 s, and pyarrow's
        proxy.restore()
        assert store.get("a") == b"x"
        pq.write_table(pa.table({"x": [1]}), f"{base}/p.parquet", filesystem=fs)
        assert store.list("p") == ["p.parquet"]
    finally:
        proxy.close()


def test_a_flaky_store_fails_as_an_unreachable_endpoint_does(tmp_path):
    store = FlakyStore(tmp_path)
    store.fail_next = 1
    with pytest.raises(ConnectionError) as failed:
        store.put("k", b"v")
    assert is_store_error(failed.value)
    store.put("k", b"v")
    fs, base = store.arrow_fs()
    store.down = True
    with pytest.raises(OSError):
        pq.write_table(pa.table({"x": [1]}), f"{base}/p.parquet", filesystem=fs)
    store.down = False
    pq.write_table(pa.table({"x": [1]}), f"{base}/p.parquet", filesystem=fs)
    assert store.list("") == ["k", "p.parquet"] and store.failures == 2
