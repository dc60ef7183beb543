"""Checkpoints in an object store: round trip, retention, and refusing damaged ones."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from ausm_stream.errors import InvalidInputError
from ausm_stream.operators.checkpoint import (
    Checkpoint,
    CheckpointStore,
    PartitionManifest,
    stream_prefix,
)
from ausm_stream.operators.processor import StreamProcessor
from ausm_stream.operators.recovery import recovery_plan
from ausm_stream.pipeline import records
from ausm_stream.pipeline.sinks import ParquetSink
from ausm_stream.pipeline.storage import FileStore
from ausm_stream.pipeline.tracks import encode_tracks
from tests.conftest import make_model
from tests.operators.test_processor import SIZE, chunk
from tests.pipeline.test_ids import HOSTILE_IDS

MODEL = make_model(image_size=SIZE, fg_threshold=0.85)


def checkpoints_at(store, frames: list[int], keep: int = 3, stream: str = "a") -> CheckpointStore:
    """Checkpoints of ``stream`` after each count of ``frames``, with a sink buffer."""
    ckpts = CheckpointStore(store, MODEL.cfg, "m@1", keep=keep)
    sink = ParquetSink(store, "m@1", parquet_frames=64)
    p = StreamProcessor(MODEL, lambda f: sink.add(f, encode_tracks([f], "m@1")))
    p.on_record(records.PromptRecord(stream, 40, [3], np.ones((1, *SIZE), dtype=bool)), 0)
    done = 0
    for n in frames:
        p.on_record(chunk(stream, done, n - done), offset=n)
        p.drain()
        done = n
        snap = p.snapshot(stream, n + 1)
        ckpts.write(Checkpoint(snap, {"parquet": sink.pending(stream)}), "t", 0)
    return ckpts


def test_a_checkpoint_reads_back_as_written_and_only_the_last_k_are_kept(tmp_path):
    store = FileStore(tmp_path)
    ckpts = checkpoints_at(store, [2, 4, 6, 8], keep=3)
    ckpt, manifest = ckpts.load("a")
    snap = ckpt.snapshot
    assert (manifest.frame_idx, manifest.offset, snap.next_frame, snap.frames_done) == (8, 9, 8, 8)
    assert [(at, p.object_ids) for at, p in snap.prompts] == [(40, [3])]
    infos, rows = ckpt.pending["parquet"]
    assert infos.column("frame_idx").to_pylist() == list(range(8))
    assert rows.num_rows == sum(infos.column("tracks").to_pylist())
    kept = [k for k in store.list(stream_prefix("a")) if k.endswith(".safetensors")]
    assert [k.rsplit("/", 1)[1] for k in kept] == [f"{n:012d}.safetensors" for n in (4, 6, 8)]


def damage(store, kind: str) -> None:
    newest = f"{stream_prefix('a')}{8:012d}"
    if kind == "flipped":
        blob = bytearray(store.get(f"{newest}.safetensors"))
        blob[len(blob) // 2] ^= 0xFF
        store.put(f"{newest}.safetensors", bytes(blob))
    elif kind == "truncated":
        store.put(f"{newest}.safetensors", store.get(f"{newest}.safetensors")[:1000])
    elif kind == "missing":
        store.delete(f"{newest}.safetensors")
    else:  # from other weights: the manifests say so
        for key in (f"{newest}.json", f"{stream_prefix('a')}latest.json"):
            manifest = json.loads(store.get(key))
            manifest["model_version"] = "other@123"
            store.put(key, json.dumps(manifest).encode())


@pytest.mark.parametrize("kind", ["flipped", "truncated", "missing", "other-weights"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, kind, caplog):
    store = FileStore(tmp_path)
    ckpts = checkpoints_at(store, [4, 8])
    damage(store, kind)
    with caplog.at_level(logging.ERROR):
        ckpt, manifest = ckpts.load("a")
    assert manifest.frame_idx == 4 and ckpt.snapshot.next_frame == 4
    reason = {
        "flipped": "truncated or damaged",
        "truncated": "truncated or damaged",
        "missing": "is missing",
        "other-weights": "written by model 'other@123'",
    }[kind]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused and "stream a" in refused[0] and reason in refused[0]
    assert f"{8:012d}" in refused[0] or "latest.json" in refused[0]


def test_recovery_seeks_to_the_smallest_offset_any_stream_needs(tmp_path):
    store = FileStore(tmp_path)
    ckpts = checkpoints_at(store, [4, 8])  # stream "a" resumes at offset 9
    manifest = PartitionManifest("t", 0, position=20)
    manifest.streams = {"a": {"first": 0, "resume": 9}, "b": {"first": 5, "resume": 5}}
    ckpts.write_partition(manifest)
    plan = recovery_plan(ckpts, "t", 0, partitions=1)
    assert plan.seek == 5  # "b" never wrote a checkpoint: replayed from its first record
    assert [c.snapshot.stream_id for c in plan.restored] == ["a"]
    # Without the partition's manifest, streams without checkpoints are unknown: from the start.
    store.put(
        "offsets/t/0.json", json.dumps({**dataclasses.asdict(manifest), "partition": 1}).encode()
    )
    assert recovery_plan(ckpts, "t", 0, partitions=1).seek is None  # another's: refused
    store.delete("offsets/t/0.json")
    assert recovery_plan(ckpts, "t", 0, partitions=1).seek is None


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_a_hostile_stream_id_never_names_a_checkpoint_path(tmp_path, bad):
    store = FileStore(tmp_path / "store")
    ckpts = checkpoints_at(store, [2])
    snap = dataclasses.replace(ckpts.load("a")[0].snapshot, stream_id=bad)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidInputError, match="stream id"):
        ckpts.write(Checkpoint(snap), "t", 0)
    with pytest.raises(InvalidInputError, match="stream id"):
        ckpts.load(bad)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_a_stream_in_another_streams_folder_neither_prunes_nor_loads_it(tmp_path):
    """Objects of a stream ``a/b`` (as a build that did not check ids wrote them) lie in stream
    ``a``'s folder: ``a`` lists its folder without descending, so they are not its own."""
    store = FileStore(tmp_path)
    for name in ("999999999999.json", "latest.json", "999999999999.safetensors"):
        store.put(f"checkpoints/a/b/{name}", b"{}")
    ckpts = checkpoints_at(store, [2, 4, 6, 8], keep=3)
    ckpt, manifest = ckpts.load("a")
    assert manifest.frame_idx == 8 and ckpt.snapshot.stream_id == "a"
    kept = [k for k in store.list(stream_prefix("a")) if k.endswith(".safetensors")]
    assert kept == [f"checkpoints/a/{n:012d}.safetensors" for n in (4, 6, 8)] + [
        "checkpoints/a/b/999999999999.safetensors"  # not a's to prune
    ]
    assert ckpts.discover("t", 0, partitions=1) == ["a"]  # "a/b" names no stream


def test_a_manifest_naming_another_stream_or_its_object_is_refused(tmp_path, caplog):
    store = FileStore(tmp_path)
    ckpts = checkpoints_at(store, [4, 8])
    checkpoints_at(store, [6], stream="b")
    of_b = store.get(f"{stream_prefix('b')}latest.json")
    for key in (f"{stream_prefix('a')}{8:012d}.json", f"{stream_prefix('a')}latest.json"):
        store.put(key, of_b)  # b's manifest where a's newest were
    with caplog.at_level(logging.ERROR):
        ckpt, manifest = ckpts.load("a")
    assert manifest.stream_id == "a" and manifest.frame_idx == 4  # its own previous one
    assert ckpt.snapshot.stream_id == "a"
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused and all("names stream 'b'" in r for r in refused)
    # A manifest of "a" whose object lies outside a's folder is refused too.
    b_manifest = json.loads(of_b)
    stray = {**dataclasses.asdict(manifest), "object": b_manifest["object"]}
    stray["sha256"] = b_manifest["sha256"]
    store.put(f"{stream_prefix('a')}latest.json", json.dumps(stray).encode())
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        _, manifest = ckpts.load("a")
    assert manifest.object == f"{stream_prefix('a')}{4:012d}.safetensors"
    assert any("outside checkpoints/a/" in r.getMessage() for r in caplog.records)


def test_checkpoints_of_a_topic_created_again_are_refused(tmp_path, caplog):
    """Offsets of a recreated topic mean other records: manifests name the topic's id."""
    store = FileStore(tmp_path)
    ckpts = CheckpointStore(store, MODEL.cfg, "m@1")
    old = checkpoints_at(store, [4, 8])  # written without an id (an older build): accepted
    assert recovery_plan(old, "t", 0, partitions=1, topic_id="id-2").restored
    ckpt, _ = ckpts.load("a")
    ckpts.write(ckpt, "t", 0, topic_id="id-1")
    manifest = PartitionManifest("t", 0, position=20, topic_id="id-1")
    manifest.streams = {"a": {"first": 0, "resume": 9}}
    ckpts.write_partition(manifest)
    same = recovery_plan(ckpts, "t", 0, partitions=1, topic_id="id-1")
    assert [c.snapshot.stream_id for c in same.restored] == ["a"] and same.seek == 9
    assert same.manifest.topic_id == "id-1"
    with caplog.at_level(logging.ERROR):
        again = recovery_plan(ckpts, "t", 0, partitions=1, topic_id="id-2")
    assert again.restored == [] and again.seek is None  # the new topic from its start
    assert again.manifest.topic_id == "id-2"
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "created again" in messages and "id-1" in messages
