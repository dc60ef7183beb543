"""What the end-to-end tests share: configs on fresh topics, ingest, the pool, read-backs.

Real parts only: Tansu speaks the Kafka protocol, moto serves S3, PyAV encodes and decodes
H.264, workers and the coordinator are Ray actors. The model has seeded random weights:
these tests check the data plane, not segmentation quality.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from ausm_stream import rle
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.pipeline import kafka, records, tracks
from ausm_stream.pipeline.config import (
    IngestConfig,
    KafkaConfig,
    ModelConfig,
    PipelineConfig,
    StorageConfig,
    WorkerConfig,
)
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.ingest import Ingest
from ausm_stream.pipeline.storage import ObjectStore
from ausm_stream.pipeline.video_files import write_h264
from tests.conftest import s3_storage

FRAMES = 48
CAPTURE_START_NS = 1_700_000_000 * 10**9
"""Ingest's clock in tests: file frames are stamped from it, so two runs write equal rows."""


def camera_chunk(stream_id: str, first: int, n: int, seed: int = 0) -> records.FrameChunk:
    """``n`` frames of random pixels from ``first`` on, stamped as an 8 fps camera would."""
    idx = np.arange(first, first + n)
    rng = np.random.default_rng([seed, first, *stream_id.encode()])
    return records.FrameChunk(
        stream_id,
        idx,
        idx * 10**8,
        10**18 + idx * 125_000_000,
        128,
        128,
        rng.integers(0, 255, (n, 128, 128, 3), dtype=np.uint8),
    )


def write_videos(root: Path, count: int, frames: int = FRAMES, fps: int = 8) -> dict[str, Path]:
    spec = ShapesSpec(size=(96, 160), frames=frames)
    return {
        f"cam-{i}": write_h264(root / f"cam-{i}.mp4", generate_video("val", i, spec).frames, fps)
        for i in range(count)
    }


def storage_for(backend: str, tmp_path: Path, s3_endpoint: str) -> StorageConfig:
    """A local directory, or a fresh bucket on the S3 endpoint."""
    if backend == "file":
        return StorageConfig(url=f"file://{tmp_path}/store")
    return s3_storage(s3_endpoint, f"e2e-{uuid.uuid4().hex[:8]}")


def pipeline_config(
    broker, weights: Path, storage: StorageConfig, **worker: object
) -> PipelineConfig:
    topic = uuid.uuid4().hex[:8]
    return PipelineConfig(
        kafka=KafkaConfig(
            bootstrap=broker.bootstrap,
            frames_topic=f"frames-{topic}",
            tracks_topic=f"tracks-{topic}",
            dead_letter_topic=f"dlq-{topic}",
            partitions=4,  # cam-1 on the first worker's [0, 1], cam-0 and cam-2 on [2, 3]
        ),
        storage=storage,
        model=ModelConfig(weights=str(weights)),
        worker=WorkerConfig(**{"parquet_frames": 16, **worker}),
    )


def ingest_all(cfg: PipelineConfig, broker, videos: dict[str, Path], frames: int = FRAMES) -> None:
    """Ingest every video concurrently, one thread each, as separate cameras would."""
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    producer = kafka.make_producer(cfg.kafka, broker.bootstrap)
    jobs = [
        Ingest(
            sid,
            str(path),
            (128, 128),
            producer,
            cfg.kafka,
            IngestConfig(),
            clock=lambda: CAPTURE_START_NS,
        )
        for sid, path in videos.items()
    ]
    threads = [threading.Thread(target=j.run) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(j.report.frames == frames for j in jobs)


def run_workers(
    cfg: PipelineConfig,
    broker,
    streams: set[str],
    workers: int | None = None,
    max_seconds: float = 240,
) -> dict:
    """The pool as ``run`` and the demo start it (one worker per core of the test's Ray),
    until every stream ended; it is killed afterwards."""
    pool = WorkerPool.start(cfg, broker.bootstrap, workers)
    try:
        return ray.get(
            pool.run(until_ended=streams, max_seconds=max_seconds), timeout=max_seconds + 60
        )
    finally:
        pool.kill()


def sigkill(handle: ray.actor.ActorHandle) -> None:
    """SIGKILL an actor's process (Ray starts it again, as a crashed worker's node would)."""
    os.kill(ray.get(handle.pid.remote()), signal.SIGKILL)


def consume(broker, topic: str, partitions: int, kafka_cfg: KafkaConfig | None = None) -> list:
    """Every record of the topic, read until three polls in a row bring nothing."""
    consumer = kafka.make_consumer(kafka_cfg or KafkaConfig(), broker.bootstrap)
    kafka.assign(consumer, topic, range(partitions))
    out, idle = [], 0
    while idle < 3:
        polled = consumer.poll(timeout_ms=500)
        idle = 0 if polled else idle + 1
        for msgs in polled.values():
            out.extend(msgs)
    consumer.close()
    return out


def check_every_frame_once(store: ObjectStore, streams: dict[str, int]) -> None:
    frames = read_dataset(store, "frames")
    for sid, count in streams.items():
        idx = frames.filter(pc.field("stream_id") == sid)["frame_idx"].to_pylist()
        assert sorted(idx) == list(range(count)), sid  # every frame, exactly once
    rows = read_dataset(store, "tracks")
    assert rows.num_rows > 0
    columns = ["mask_rle", "mask_height", "mask_width", "source_height", "source_width", "bbox"]
    for row in rows.slice(0, 50).select(columns).to_pylist():
        mask = rle.decode(row["mask_rle"], row["mask_height"], row["mask_width"])
        assert mask.shape == (77, 128) and mask.any()  # 96x160 letterboxed into 128x128
        assert (row["source_height"], row["source_width"]) == (96, 160)
        assert 0 <= row["bbox"]["x0"] < row["bbox"]["x1"] <= 160


def dataset_files(store: ObjectStore) -> dict[str, bytes]:
    """Every Parquet file of the tracks and frames datasets, by key, with its bytes."""
    return {
        key: store.get(key)
        for table in ("tracks", "frames")
        for key in store.list(f"{table}/")
        if key.endswith(".parquet")
    }


def topic_rows(broker, cfg: PipelineConfig) -> tuple[pa.Table, int]:
    """The tracks topic's rows with replayed messages dropped by their headers, sorted; and
    how many messages were dropped."""
    seen, batches, dropped = set(), [], 0
    for msg in consume(broker, cfg.kafka.tracks_topic, cfg.kafka.partitions, cfg.kafka):
        key = tracks.track_message_id(msg.headers)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        batches.append(tracks.decode_tracks(msg.value))
    table = pa.Table.from_batches(batches, schema=tracks.TRACKS_SCHEMA)
    order = [("stream_id", "ascending"), ("frame_idx", "ascending"), ("track_id", "ascending")]
    return table.sort_by(order), dropped
