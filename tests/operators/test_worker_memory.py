"""A worker lets ended and idle streams go and pages them back in when records come."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from ausm_stream.operators.worker import SegmentationWorker
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import StorageConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store
from tests.e2e import pipeline_config

pytestmark = pytest.mark.slow


def send_frames(cfg, broker, first: int, last: int, end: int | None) -> None:
    producer = kafka.make_producer(cfg.kafka, broker.bootstrap)
    part = kafka.partition_for("cam", cfg.kafka.partitions)
    idx = np.arange(first, last)
    chunk = records.FrameChunk(
        "cam",
        idx,
        idx * 10**8,
        idx + 10**18,
        128,
        128,
        np.stack(
            [np.random.default_rng(int(i)).integers(0, 255, (128, 128, 3)) for i in idx]
        ).astype(np.uint8),  # each frame's pixels depend on its index alone
    )
    for rec in [chunk] + ([records.ControlRecord("end", "cam", end)] if end else []):
        value, kind = records.encode(rec)
        kafka.send(producer, cfg.kafka.frames_topic, "cam", value, kind, partition=part)
    producer.flush()


def rows(cfg, frames: range) -> list[tuple]:
    table = read_dataset(open_store(cfg.storage)).filter(pc.field("frame_idx") >= frames.start)
    cols = ["frame_idx", "track_id", "label", "score", "mask_rle"]
    return sorted(tuple(r.values()) for r in table.select(cols).to_pylist())


def test_an_ended_stream_leaves_memory_and_is_paged_back_in(broker, weights, tmp_path):
    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/paged"))
    straight = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/straight"))
    for c in (cfg, straight):
        kafka.ensure_topics(c.kafka, broker.bootstrap)
    send_frames(straight, broker, 0, 16, end=16)
    send_frames(cfg, broker, 0, 8, end=8)
    worker = SegmentationWorker(cfg, broker.bootstrap, list(range(4)))
    first = worker.run(until_ended={"cam"}, max_seconds=60)
    assert first.resident_streams == 0 and first.streams["cam"].ended
    # The camera comes back after its end (a live source restarted): frames 8-15.
    send_frames(cfg, broker, 8, 16, end=None)
    summary = worker.run(idle_timeout_s=3, max_seconds=60)
    assert summary.streams["cam"].frames_out == 16
    reference = SegmentationWorker(straight, broker.bootstrap, list(range(4)))
    reference.run(until_ended={"cam"}, max_seconds=60)
    # Its state came back from the checkpoint: frames 8-15 as if it had never left.
    assert rows(cfg, range(8, 16)) == rows(straight, range(8, 16)) != []


def test_an_idle_stream_is_paged_out_and_back_in(broker, weights, tmp_path):
    cfg = pipeline_config(
        broker, weights, StorageConfig(url=f"file://{tmp_path}/paged"), idle_page_out_s=1.0
    )
    straight = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/straight"))
    for c in (cfg, straight):
        kafka.ensure_topics(c.kafka, broker.bootstrap)
    send_frames(straight, broker, 0, 16, end=16)
    send_frames(cfg, broker, 0, 8, end=None)
    worker = SegmentationWorker(cfg, broker.bootstrap, list(range(4)))
    idle = worker.run(idle_timeout_s=4, max_seconds=60)  # the camera pauses
    assert idle.resident_streams == 0 and not idle.streams["cam"].ended
    send_frames(cfg, broker, 8, 16, end=16)
    worker.run(until_ended={"cam"}, max_seconds=60)
    reference = SegmentationWorker(straight, broker.bootstrap, list(range(4)))
    reference.run(until_ended={"cam"}, max_seconds=60)
    assert rows(cfg, range(0, 16)) == rows(straight, range(0, 16)) != []
