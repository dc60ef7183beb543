"""End to end: encoded video -> ingest -> Kafka -> Ray worker -> Parquet and tracks topic.

Real parts only: Tansu speaks the Kafka protocol, moto serves S3, PyAV encodes and decodes
H.264, the worker is a Ray actor. The model has seeded random weights: these tests check the
data plane (every frame exactly once, records valid), not segmentation quality.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from kafka import TopicPartition

from ausm_stream.operators.worker import ERROR_HEADER
from ausm_stream.pipeline import kafka, records, tracks
from ausm_stream.pipeline.broker import free_port
from ausm_stream.pipeline.config import IngestConfig, KafkaConfig, PipelineConfig, StorageConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.ingest import Ingest
from ausm_stream.pipeline.storage import open_store
from tests.conftest import disc_mask
from tests.e2e import (
    FRAMES,
    check_every_frame_once,
    consume,
    ingest_all,
    pipeline_config,
    run_workers,
    storage_for,
    write_videos,
)
from tests.live_source import serve_camera

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    return write_videos(tmp_path_factory.mktemp("videos"), 3)


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_three_streams_every_frame_exactly_once(
    backend, broker, ray_session, weights, videos, tmp_path, s3_endpoint
):
    storage = storage_for(backend, tmp_path, s3_endpoint)
    cfg = pipeline_config(broker, weights, storage)
    ingest_all(cfg, broker, videos)
    summary = run_workers(cfg, broker, set(videos))
    assert {sid: s.frames_out for sid, s in summary.streams.items()} == dict.fromkeys(
        videos, FRAMES
    )
    assert summary.dead_letters == 0
    # One worker per core, each with its own partitions and the streams hashed to them.
    workers = summary.workers
    assert [w.partitions for w in workers] == [[0, 1], [2, 3]]
    where = {sid: s.worker for sid, s in summary.streams.items()}
    assert where == {"cam-1": "worker-0", "cam-0": "worker-1", "cam-2": "worker-1"}
    for w in workers:
        assert 0 < w.step_seconds < w.run_seconds and w.cpu_seconds > 0
        assert w.resident_streams == 0  # ended streams left memory
    rows = read_dataset(open_store(storage))
    for sid, s in summary.streams.items():  # the status counts the tracks that were shown
        shown = rows.filter(pc.field("stream_id") == sid)["track_id"].to_pylist()
        assert s.tracks == max(shown) == len(set(shown)), sid
        assert s.residence == "ended" and s.last_checkpoint_frame == FRAMES
        assert (s.frames_in, s.lag_frames, s.skipped) == (FRAMES, 0, 0)
    check_every_frame_once(open_store(storage), dict.fromkeys(videos, FRAMES))
    # Offsets the checkpoints cover are committed for lag tools: all read, nothing lags.
    lag = kafka.make_consumer(cfg.kafka, broker.bootstrap, group_id=cfg.kafka.lag_group)
    ends = kafka.end_offsets(cfg.kafka, broker.bootstrap, cfg.kafka.frames_topic, range(4))
    committed = {p: lag.committed(TopicPartition(cfg.kafka.frames_topic, p)) for p in range(4)}
    assert committed == ends
    lag.close()
    # The tracks topic carries the same rows, in frame order per stream.
    msgs = consume(broker, cfg.kafka.tracks_topic, cfg.kafka.partitions)
    per_stream: dict[str, list[int]] = {}
    for m in msgs:
        batch = tracks.decode_tracks(m.value)
        per_stream.setdefault(m.key.decode(), []).append(batch.column("frame_idx")[0].as_py())
    for sid, idx in per_stream.items():
        assert idx == sorted(idx) and len(idx) == len(set(idx)), sid


def test_bad_chunks_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    broker, ray_session, weights, tmp_path
):
    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/store"))
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    producer = kafka.make_producer(cfg.kafka, broker.bootstrap)
    rng = np.random.default_rng(0)

    def frames_chunk(first: int, size: int = 128) -> bytes:
        return records.encode_frames(
            records.FrameChunk(
                "cam-x",
                np.arange(first, first + 8),
                np.arange(first, first + 8) * 10**8,
                np.arange(first, first + 8) + 1_700_000_000 * 10**9,
                128,
                128,
                rng.integers(0, 255, (8, size, size, 3), dtype=np.uint8),
            )
        )

    def send(record: records.Record | bytes, stream: str = "cam-x") -> None:
        value, kind = (record, "frames") if isinstance(record, bytes) else records.encode(record)
        partition = kafka.partition_for(stream, cfg.kafka.partitions)
        kafka.send(producer, cfg.kafka.frames_topic, stream, value, kind, partition=partition)

    def prompt(
        frame: int, ids: list[int], empty: bool = False, stream: str = "cam-x"
    ) -> records.PromptRecord:
        masks = np.zeros((len(ids), 128, 128), dtype=bool)
        if not empty:
            for i in range(len(ids)):
                masks[i, 4 * i : 4 * i + 3, 10:20] = True
        return records.PromptRecord(stream, frame, ids, masks)

    good = frames_chunk(0)
    send(good)
    send(good[: len(good) // 3])  # corrupt bytes
    send(frames_chunk(8, size=64))  # the wrong frame size
    send(prompt(16, [1], empty=True))  # an empty mask
    half = cfg_n_id(weights) // 2 + 1
    send(prompt(16, list(range(10, 10 + half))))  # fits the ID buffer alone ...
    send(prompt(16, list(range(50, 50 + half))))  # ... but not with the one before
    send(frames_chunk(16))
    # A prompt for a stream that never sends a frame, read by cam-x's worker.
    ghost = next(g for i in range(100) if same_partition(g := f"ghost-{i}", "cam-x", cfg))
    send(prompt(30, [2], stream=ghost), stream=ghost)
    send(frames_chunk(24, size=64))  # the last chunk is bad too: the stream still ends
    send(records.ControlRecord("end", "cam-x", 32))
    producer.flush()

    summary = run_workers(cfg, broker, {"cam-x"})
    assert summary.dead_letters == 5
    dead = consume(broker, cfg.kafka.dead_letter_topic, cfg.kafka.partitions)
    reasons = sorted(kafka.header(m.headers, ERROR_HEADER) for m in dead)
    assert len(reasons) == 5
    expected = [
        "64x64 frames, the model takes 128x128",
        "64x64 frames, the model takes 128x128",
        "exceed the ID buffer",
        "object ids [1] are empty",
        "not a readable Arrow IPC stream",
    ]
    for phrase in expected:
        assert sum(phrase in r for r in reasons) == expected.count(phrase), (phrase, reasons)
    assert summary.streams["cam-x"].ended and summary.streams["cam-x"].gaps == 2
    assert ghost not in summary.streams  # a prompt alone does not make a stream
    frames = read_dataset(open_store(cfg.storage), "frames")
    assert sorted(frames["frame_idx"].to_pylist()) == [*range(8), *range(16, 24)]


def same_partition(a: str, b: str, cfg: PipelineConfig) -> bool:
    n = cfg.kafka.partitions
    return kafka.partition_for(a, n) == kafka.partition_for(b, n)


def cfg_n_id(weights: Path) -> int:
    from ausm_stream.model import AUSM

    return AUSM.read_config(weights).n_id


def test_prompt_mid_stream_is_applied_at_its_frame(broker, ray_session, weights, videos, tmp_path):
    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/store"))
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    producer = kafka.make_producer(cfg.kafka, broker.bootstrap)
    # The prompt is produced first under the stream's key; it names frame 20.
    prompt = records.PromptRecord("cam-0", 20, [5], disc_mask((128, 128), 64, 64, 12)[None].numpy())
    value, kind = records.encode(prompt)
    kafka.send(
        producer,
        cfg.kafka.frames_topic,
        "cam-0",
        value,
        kind,
        partition=kafka.partition_for("cam-0", cfg.kafka.partitions),
    )
    producer.flush()
    ingest_all(cfg, broker, {"cam-0": videos["cam-0"]})
    run_workers(cfg, broker, {"cam-0"})
    tracks = read_dataset(open_store(cfg.storage))
    prompted = (
        tracks.filter(pc.field("prompt_object_id") == 5)
        .select(["frame_idx", "prompted", "track_id"])
        .to_pylist()
    )
    assert min(r["frame_idx"] for r in prompted) == 20 and all(r["prompted"] for r in prompted)
    assert len({r["track_id"] for r in prompted}) == 1


def test_live_source_drop_and_reconnect(broker):
    """An HTTP camera served by the ffmpeg program, killed and restarted mid-stream."""
    port = free_port()
    server = serve_camera(port, fps=10)
    cfg = KafkaConfig(
        bootstrap=broker.bootstrap, frames_topic=f"live-{uuid.uuid4().hex[:6]}", partitions=1
    )
    kafka.ensure_topics(cfg, broker.bootstrap)
    drops: list[str] = []
    ingest = Ingest(
        "live-1",
        f"http://127.0.0.1:{port}/live.ts",
        (64, 64),
        kafka.make_producer(cfg, broker.bootstrap),
        cfg,
        IngestConfig(chunk_frames=4, reconnect_initial_s=0.2, reconnect_max_s=1.0),
        on_drop=drops.append,
    )
    thread = threading.Thread(target=ingest.run, kwargs={"max_frames": 50})
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while ingest.report.frames < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = len(drops)
        server.kill()
        server.wait()
        time.sleep(1.0)  # the camera is away for a while
        server = serve_camera(port, fps=10)
        thread.join(90)
        assert not thread.is_alive()
    finally:
        ingest.stop()
        server.kill()
        server.wait()
    assert ingest.report.frames == 50
    assert len(drops) > before  # the drop was reported
    chunks = [
        records.decode(kafka.header(m.headers, records.KIND_HEADER), m.value, m.key.decode())
        for m in consume(broker, cfg.frames_topic, 1)
    ]
    frames = [c for c in chunks if isinstance(c, records.FrameChunk)]
    idx = np.concatenate([c.frame_idx for c in frames])
    assert idx.tolist() == list(range(50))  # dense across the reconnect
    for field in ("pts_ns", "capture_ts"):
        values = np.concatenate([getattr(c, field) for c in frames])
        assert np.all(np.diff(values) > 0), field  # monotonic across the reconnect
    assert chunks[-1] == records.ControlRecord("end", "live-1", 50)
