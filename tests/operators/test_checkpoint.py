"""Checkpoints in an object store: round trip, retention, and refusing damaged ones."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

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

MODEL = make_model(image_size=SIZE, fg_threshold=0.85)


def checkpoints_at(store, frames: list[int], keep: int = 3) -> CheckpointStore:
    """Checkpoints of stream "a" after each count of ``frames``, with a sink buffer."""
    ckpts = CheckpointStore(store, MODEL.cfg, "m@1", keep=keep)
    sink = ParquetSink(store, "m@1", parquet_frames=64)
    p = StreamProcessor(MODEL, lambda f: sink.add(f, encode_tracks([f], "m@1")))
    p.on_record(records.PromptRecord("a", 40, [3], np.ones((1, *SIZE), dtype=bool)), 0)
    done = 0
    for n in frames:
        p.on_record(chunk("a", done, n - done), offset=n)
        p.drain()
        done = n
        ckpts.write(Checkpoint(p.snapshot("a", n + 1), {"parquet": sink.pending("a")}), "t", 0)
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
    store.delete("offsets/t/0.json")
    assert recovery_plan(ckpts, "t", 0, partitions=1).seek is None
