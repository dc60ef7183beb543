"""A stream fed faster than the worker steps it: ``skip_to_live`` keeps it live (real broker)."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from ausm_stream.operators import worker as worker_module
from ausm_stream.operators.worker import SegmentationWorker
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import StorageConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store
from tests.e2e import camera_chunk, pipeline_config

pytestmark = pytest.mark.slow

FRAMES = 96


def feed(cfg, broker) -> None:
    """12 s of an 8 fps camera, all in the topic before the worker starts."""
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    producer = kafka.make_producer(cfg.kafka, broker.bootstrap)
    part = kafka.partition_for("cam", cfg.kafka.partitions)
    for first in range(0, FRAMES, 8):
        chunk = camera_chunk("cam", first, 8)
        value, kind = records.encode(chunk)
        kafka.send(producer, cfg.kafka.frames_topic, "cam", value, kind, partition=part)
    value, kind = records.encode(records.ControlRecord("end", "cam", FRAMES))
    kafka.send(producer, cfg.kafka.frames_topic, "cam", value, kind, partition=part)
    producer.flush()


def test_a_stream_far_behind_skips_to_live_and_records_the_skipped_frames(
    broker, weights, tmp_path
):
    cfg = pipeline_config(
        broker,
        weights,
        StorageConfig(url=f"file://{tmp_path}/store"),
        lag_policy="skip_to_live",
        max_lag_s=1.0,
    )
    feed(cfg, broker)
    status = SegmentationWorker(cfg, broker.bootstrap, list(range(4))).run(
        until_ended={"cam"}, max_seconds=120
    )
    cam = status.streams["cam"]
    store = open_store(cfg.storage)
    frames = read_dataset(store, "frames").filter(pc.field("stream_id") == "cam")
    assert sorted(frames["frame_idx"].to_pylist()) == list(range(FRAMES))  # each frame once
    skipped = frames.filter(pc.field("skipped"))["frame_idx"].to_pylist()
    assert 0 < len(skipped) == cam.skipped and cam.frames_out == FRAMES - len(skipped)
    assert cam.frames_in == FRAMES and cam.ended
    assert FRAMES - 1 not in skipped  # it caught up with the newest frame
    tracked = set(
        read_dataset(store).filter(pc.field("stream_id") == "cam")["frame_idx"].to_pylist()
    )
    assert not tracked & set(skipped)  # skipped frames have no tracks


def test_a_worker_behind_stops_fetching_at_its_queue_budget(broker, weights, tmp_path, monkeypatch):
    frame_bytes = 128 * 128 * 3
    cfg = pipeline_config(
        broker,
        weights,
        StorageConfig(url=f"file://{tmp_path}/store"),
        max_queued_bytes=16 * frame_bytes,
    )
    feed(cfg, broker)
    monkeypatch.setattr(worker_module, "POLL_RECORDS", 2)  # a poll adds at most 16 frames
    worker = SegmentationWorker(cfg, broker.bootstrap, list(range(4)))
    held = []
    on_record = worker.processor.on_record

    def counting(record, offset=-1):
        on_record(record, offset)
        held.append(worker.processor.backlog())

    worker.processor.on_record = counting
    waiting = []
    note = worker._note_highwater

    def noting():
        note()
        waiting.append(sum(worker.partition_lag.values()))

    worker._note_highwater = noting
    status = worker.run(until_ended={"cam"}, max_seconds=120)
    assert max(waiting) > 0 and waiting[-1] == 0  # frames waited in Kafka, then none did
    assert status.partition_lag == dict.fromkeys(range(4), 0)
    assert status.streams["cam"].frames_out == FRAMES  # process_all: nothing skipped
    assert max(held) <= 16 + 2 * 8 < FRAMES  # the budget plus one poll, never the whole topic
