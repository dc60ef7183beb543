"""Object stores: a directory and a real S3 endpoint (moto) via minio and pyarrow.fs."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ausm_stream.pipeline.config import StorageConfig
from ausm_stream.pipeline.storage import FileStore, open_store
from tests.conftest import s3_storage


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
