"""The stream registry: one JSON object per stream in the object store."""

from __future__ import annotations

import dataclasses

import pytest

from ausm_stream.errors import InvalidInputError
from ausm_stream.pipeline.registry import StreamRegistry, new_stream
from ausm_stream.pipeline.storage import FileStore
from tests.pipeline.test_ids import HOSTILE_IDS


def test_streams_round_trip_and_survive_a_new_registry(tmp_path):
    store = FileStore(tmp_path)
    registry = StreamRegistry(store)
    a = new_stream("cam-1", "rtsp://camera-1/stream", 8.0)
    b = dataclasses.replace(new_stream("cam-0", "external", None), first_frame=96, next_object_id=4)
    registry.put(a)
    registry.put(b)
    store.put("tracks/stream_id=cam-0/date=2026-12-04/part-0-63.parquet", b"not a stream")
    again = StreamRegistry(FileStore(tmp_path))  # what a restarted cluster reads
    assert again.all() == [b, a]  # by id; the dataset beside it is not a stream
    assert again.get("cam-0") == b and again.get("cam-0").external
    assert again.get("nope") is None
    again.remove("cam-1")
    assert [s.id for s in registry.all()] == ["cam-0"]
    assert store.list("registry/") == ["registry/streams/cam-0.json"]


@pytest.mark.parametrize("bad", [*HOSTILE_IDS, "a b", "-lead"])
def test_ids_that_cannot_name_keys_and_partitions_are_refused(tmp_path, bad):
    with pytest.raises(InvalidInputError, match="stream id"):
        StreamRegistry(FileStore(tmp_path)).put(new_stream(bad, "external", None))


def test_an_unreadable_object_names_its_key(tmp_path):
    store = FileStore(tmp_path)
    store.put("registry/streams/cam-9.json", b"{not json")
    with pytest.raises(InvalidInputError, match=r"registry/streams/cam-9\.json"):
        StreamRegistry(store).all()


def test_objects_in_folders_below_the_registry_are_not_streams(tmp_path):
    """What a checkpoint of stream ``../registry/streams/evil`` wrote before ids were checked:
    the registry reads its own folder only, so the control plane stays up."""
    store = FileStore(tmp_path)
    registry = StreamRegistry(store)
    registry.put(new_stream("cam-1", "external", None))
    store.put("registry/streams/evil/000000000008.json", b'{"stream_id": "x", "frame_idx": 8}')
    store.put("registry/streams/evil/latest.json", b'{"stream_id": "x", "frame_idx": 8}')
    assert [s.id for s in registry.all()] == ["cam-1"]
