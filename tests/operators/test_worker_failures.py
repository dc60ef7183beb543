"""Failures that are not a record's fault of validation (real broker, in-process worker): a
record that breaks the decoder in a way no check foresaw is dead-lettered like an invalid
one, and a loop that fails leaves the worker ready for its next run (what the coordinator
starts after a back-off), which recovers from the checkpoints: nothing lost, nothing
written twice."""

from __future__ import annotations

import threading
import time

import pyarrow.compute as pc
import pytest

from ausm_stream.errors import RecordError
from ausm_stream.operators.worker import ERROR_HEADER, InjectedFault, SegmentationWorker
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import StorageConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store
from tests.conftest import wait_for
from tests.e2e import camera_chunk, consume, pipeline_config

pytestmark = pytest.mark.slow


def int128_end_record(stream_id: str, frame: int) -> bytes:
    """An end record whose schema declares ``frame_idx`` a 128-bit integer: pyarrow refuses
    it with ``ArrowNotImplementedError``, which the record checks do not turn into a
    :class:`RecordError` (the kind of bug a per-record catch must survive)."""
    value = records.encode(records.ControlRecord("end", stream_id, frame))[0]
    int64 = b"\x01\x40\x00\x00\x00"  # the Int type table: is_signed, then bitWidth 64
    assert value.count(int64) == 1
    return value.replace(int64, b"\x01\x80\x00\x00\x00")


def feed(cfg, broker, frames: int, poison_at: int | None = None) -> None:
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    producer = kafka.make_producer(cfg.kafka, broker.bootstrap)
    part = kafka.partition_for("cam", cfg.kafka.partitions)

    def send(value: bytes, kind: str) -> None:
        kafka.send(producer, cfg.kafka.frames_topic, "cam", value, kind, partition=part)

    for first in range(0, frames, 8):
        if first == poison_at:
            send(int128_end_record("cam", first), "end")
        send(records.encode(camera_chunk("cam", first, 8))[0], "frames")
    send(records.encode(records.ControlRecord("end", "cam", frames))[0], "end")
    producer.flush()


def test_a_record_that_breaks_the_decoder_is_dead_lettered_and_the_stream_goes_on(
    broker, weights, tmp_path
):
    poison = int128_end_record("cam", 8)
    with pytest.raises(Exception) as raised:  # any error but a RecordError
        records.decode("end", poison, "cam", (128, 128))
    assert not isinstance(raised.value, RecordError)  # if ipc.py learns to refuse it, the
    # worker still dead-letters it; pick another poison to keep this test meaningful

    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/store"))
    feed(cfg, broker, 16, poison_at=8)
    status = SegmentationWorker(cfg, broker.bootstrap, list(range(4))).run(
        until_ended={"cam"}, max_seconds=120
    )
    assert status.streams["cam"].ended and status.streams["cam"].frames_out == 16
    assert status.dead_letters == 1
    (dead,) = consume(broker, cfg.kafka.dead_letter_topic, cfg.kafka.partitions)
    reason = kafka.header(dead.headers, ERROR_HEADER)
    assert type(raised.value).__name__ in reason and "end record" in reason, reason
    assert dead.value == poison
    frames = read_dataset(open_store(cfg.storage), "frames")
    assert sorted(frames["frame_idx"].to_pylist()) == list(range(16))


def test_a_failed_loop_leaves_the_worker_ready_to_run_again_and_loses_nothing(
    broker, weights, tmp_path
):
    frames = 64
    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/store"))
    feed(cfg, broker, frames)
    worker = SegmentationWorker(cfg, broker.bootstrap, list(range(4)))

    def fault_midway() -> None:
        wait_for("frames", lambda: worker.book.stats("cam").frames >= 24, timeout_s=120)
        worker.inject_fault("raise")

    injector = threading.Thread(target=fault_midway)
    injector.start()
    with pytest.raises(InjectedFault):
        worker.run(until_ended={"cam"}, max_seconds=120)
    injector.join()
    # The failed run dropped what memory held of its streams, as a new process would have.
    assert not worker.processor.stream_ids() and not worker.book.records
    started = time.monotonic()
    status = worker.run(until_ended={"cam"}, max_seconds=120)  # what the coordinator does
    assert time.monotonic() - started < 100
    cam = status.streams["cam"]
    assert cam.ended and cam.resumed_at is not None and 0 < cam.resumed_at < frames
    store = open_store(cfg.storage)
    done = read_dataset(store, "frames").filter(pc.field("stream_id") == "cam")
    assert sorted(done["frame_idx"].to_pylist()) == list(range(frames))  # each frame once
    tracks = read_dataset(store).filter(pc.field("stream_id") == "cam")
    keys = list(zip(tracks["frame_idx"].to_pylist(), tracks["track_id"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys))  # no row written twice
