"""Failover end to end: workers SIGKILLed mid-stream, the pipeline stopped and started again,
damaged checkpoints, workers added and removed. Each run's outputs must equal a run without
faults: the same Parquet files with the same bytes, the same tracks-topic rows once replayed
messages are dropped by their headers, every frame exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray

from ausm_stream.operators.ingest_pool import IngestPlacement
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import IngestConfig, KafkaConfig, PipelineConfig, StorageConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store
from tests.e2e import (
    FRAMES,
    check_every_frame_once,
    consume,
    dataset_files,
    ingest_all,
    pipeline_config,
    run_workers,
    sigkill,
    storage_for,
    topic_rows,
    write_videos,
)

pytestmark = pytest.mark.slow
STREAMS = 4
TOTAL = STREAMS * FRAMES


@dataclass
class Outputs:
    files: dict[str, bytes]
    tracks: pa.Table
    topic: pa.Table


def outputs(broker, cfg: PipelineConfig) -> Outputs:
    store = open_store(cfg.storage)
    order = [("stream_id", "ascending"), ("frame_idx", "ascending"), ("track_id", "ascending")]
    tracks = read_dataset(store).sort_by(order)
    tracks = tracks.select([c for c in tracks.column_names if c != "date"])
    return Outputs(dataset_files(store), tracks, topic_rows(broker, cfg)[0])


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    return write_videos(tmp_path_factory.mktemp("videos"), STREAMS)


@pytest.fixture(scope="module")
def reference(broker, ray_session, weights, videos, tmp_path_factory) -> Outputs:
    """The run without faults, on its own topics and store."""
    root = tmp_path_factory.mktemp("reference")
    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{root}/store"))
    ingest_all(cfg, broker, videos)
    summary = run_workers(cfg, broker, set(videos))
    assert summary.recovered_streams == 0
    return outputs(broker, cfg)


def assert_same_outputs(broker, cfg: PipelineConfig, reference: Outputs) -> None:
    got = outputs(broker, cfg)
    check_every_frame_once(open_store(cfg.storage), dict.fromkeys(reference_streams(), FRAMES))
    assert got.tracks.num_rows == reference.tracks.num_rows
    assert got.tracks.equals(reference.tracks)  # row for row, mask byte for mask byte
    assert sorted(got.files) == sorted(reference.files)  # no extra or partial files
    assert got.files == reference.files  # and each with the same bytes
    assert got.topic.equals(reference.topic)


def reference_streams() -> list[str]:
    return [f"cam-{i}" for i in range(STREAMS)]


def frames_done(pool: WorkerPool) -> int:
    try:
        return sum(s.frames_out for s in pool.status().streams.values())
    except ray.exceptions.RayError:
        return 0


def wait_for_frames(pool: WorkerPool, at: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while frames_done(pool) < at:
        assert time.monotonic() < deadline, f"the pool never reached {at} frames"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("workers", "backend"), [(1, "file"), (2, "file"), (2, "s3")], ids=["1w", "2w", "2w-s3"]
)
def test_workers_sigkilled_twice_leave_the_output_unchanged(
    workers, backend, broker, ray_session, weights, videos, reference, tmp_path, s3_endpoint
):
    storage = storage_for(backend, tmp_path, s3_endpoint)
    cfg = pipeline_config(broker, weights, storage)
    ingest_all(cfg, broker, videos)
    pool = WorkerPool.start(cfg, broker.bootstrap, workers)
    rng = random.Random(workers)
    # Random moments after every stream's first checkpoint (16 frames each), before its end.
    kills = sorted(rng.sample(range(STREAMS * 18, TOTAL - 16), 2))
    victims = [rng.choice(sorted(pool.workers())) for _ in kills]
    try:
        run = pool.run(until_ended=set(videos), max_seconds=240)
        for at, victim in zip(kills, victims, strict=True):
            wait_for_frames(pool, at)
            sigkill(pool.workers()[victim])
        summary = ray.get(run, timeout=300)
    finally:
        pool.kill()
    assert summary.recovered_streams >= 1  # the kills hit streams in flight
    assert {sid: s.frames_out for sid, s in summary.streams.items()} == dict.fromkeys(
        videos, FRAMES
    )
    assert_same_outputs(broker, cfg, reference)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_the_whole_pipeline_stopped_and_started_again_resumes(
    how, broker, ray_session, weights, videos, reference, tmp_path
):
    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/store"))
    ingest_all(cfg, broker, videos)
    pool = WorkerPool.start(cfg, broker.bootstrap)
    run = pool.run(until_ended=set(videos), max_seconds=240)
    wait_for_frames(pool, TOTAL // 2)
    first = None
    if how == "stop":
        pool.stop()  # checkpoints every stream where it is
        first = ray.get(run, timeout=120)
        assert 0 < sum(s.frames_out for s in first.streams.values()) < TOTAL
    pool.kill()
    summary = run_workers(cfg, broker, set(videos))
    assert summary.recovered_streams == STREAMS
    if first is not None:  # a clean stop resumes exactly where it was: nothing replayed
        resumed = {sid: s.resumed_at for sid, s in summary.streams.items()}
        assert resumed == {sid: s.frames_out for sid, s in first.streams.items()}
    assert_same_outputs(broker, cfg, reference)


def damage_newest(store, stream_id: str, how: str) -> None:
    latest = json.loads(store.get(f"checkpoints/{stream_id}/latest.json"))
    obj = latest["object"]
    if how == "flip":
        blob = bytearray(store.get(obj))
        blob[len(blob) // 3] ^= 0x55
        store.put(obj, bytes(blob))
    elif how == "truncate":
        store.put(obj, store.get(obj)[: len(store.get(obj)) // 2])
    elif how == "missing":
        store.delete(obj)
    else:  # a checkpoint of other weights
        for key in (f"checkpoints/{stream_id}/latest.json", obj.replace(".safetensors", ".json")):
            store.put(key, json.dumps({**latest, "model_version": "other@0"}).encode())


def test_damaged_newest_checkpoints_fall_back_and_the_output_is_unchanged(
    broker, ray_session, weights, videos, reference, tmp_path
):
    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/store"))
    ingest_all(cfg, broker, videos)
    pool = WorkerPool.start(cfg, broker.bootstrap)
    run = pool.run(until_ended=set(videos), max_seconds=240)
    wait_for_frames(pool, TOTAL * 2 // 3)
    pool.stop()
    ray.get(run, timeout=120)
    pool.kill()
    store = open_store(cfg.storage)
    damaged_at = {}
    for sid, how in zip(sorted(videos), ["flip", "truncate", "missing", "other"], strict=True):
        manifests = [k for k in store.list(f"checkpoints/{sid}/") if k[-9:-5].isdigit()]
        assert len(manifests) >= 2, sid  # there is a previous one to fall back to
        damaged_at[sid] = json.loads(store.get(f"checkpoints/{sid}/latest.json"))["frame_idx"]
        damage_newest(store, sid, how)
    summary = run_workers(cfg, broker, set(videos))
    assert summary.recovered_streams == STREAMS
    for sid, s in summary.streams.items():  # each resumed from an older checkpoint
        assert s.resumed_at < damaged_at[sid], sid
    assert_same_outputs(broker, cfg, reference)


def test_a_worker_added_and_one_removed_while_streams_run(
    broker, ray_session, weights, videos, reference, tmp_path
):
    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/store"))
    ingest_all(cfg, broker, videos)
    pool = WorkerPool.start(cfg, broker.bootstrap, workers=1)
    try:
        run = pool.run(until_ended=set(videos), max_seconds=240)
        wait_for_frames(pool, TOTAL // 4)
        added = pool.add_worker()
        assert pool.assignment() == {"worker-0": [0, 1], added: [2, 3]}
        wait_for_frames(pool, TOTAL // 2)
        pool.remove_worker("worker-0")
        assert pool.assignment() == {added: [0, 1, 2, 3]}
        summary = ray.get(run, timeout=300)
    finally:
        pool.kill()
    assert {sid: s.frames_out for sid, s in summary.streams.items()} == dict.fromkeys(
        videos, FRAMES
    )
    assert summary.recovered_streams >= STREAMS  # each moved at least once
    assert_same_outputs(broker, cfg, reference)


def frames_in_topic(broker, cfg: PipelineConfig) -> tuple[list[records.FrameChunk], list]:
    chunks, others = [], []
    for m in consume(broker, cfg.kafka.frames_topic, cfg.kafka.partitions):
        rec = records.decode(kafka.header(m.headers, records.KIND_HEADER), m.value, m.key.decode())
        (chunks if isinstance(rec, records.FrameChunk) else others).append(rec)
    return chunks, others


def test_an_ingest_process_killed_mid_file_resumes_each_of_its_streams_after_its_last_frame(
    broker, ray_session, videos, tmp_path
):
    """Two streams share one ingest process (``ingest.streams_per_process``); a SIGKILL of
    the process mid-file: Ray restarts it, retries both streams' runs, and each resumes
    after its last frame, with the same chunks as a run without the kill."""

    def config() -> PipelineConfig:
        topic = f"ingest-{uuid.uuid4().hex[:8]}"
        return PipelineConfig(
            kafka=KafkaConfig(bootstrap=broker.bootstrap, frames_topic=topic, partitions=2),
            ingest=IngestConfig(pace=True),  # 8 frames a second: a kill lands mid-file
        )

    straight, killed = config(), config()
    cams = ["cam-0", "cam-1"]
    placements = [IngestPlacement(cfg, broker.bootstrap, (128, 128)) for cfg in (straight, killed)]
    for cfg in (straight, killed):
        kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    ingests = [[p.start(sid, str(videos[sid])) for sid in cams] for p in placements]
    assert list(placements[1].processes().values()) == [cams]  # one process for both
    deadline = time.monotonic() + 60
    while ray.get(ingests[1][0].report()).frames < FRAMES // 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process = ingests[1][0].process
    pid = ray.get(process.pid.remote())
    os.kill(pid, signal.SIGKILL)
    runs = [ing.run for group in ingests for ing in group]
    reports = ray.get(runs, timeout=120)  # the killed one's runs are retried after its restart
    assert [r.frames for r in reports] == [FRAMES] * 4
    assert ray.get(process.pid.remote()) != pid  # it was restarted before the files ended
    (want, want_end), (got, got_end) = (frames_in_topic(broker, c) for c in (straight, killed))
    for sid in cams:
        mine, theirs = ([c for c in chunks if c.stream_id == sid] for chunks in (got, want))
        idx = np.concatenate([c.frame_idx for c in mine]).tolist()
        assert idx == list(range(FRAMES)), sid  # dense, each frame once
        for a, b in zip(mine, theirs, strict=True):  # the same chunks, timestamps and pixels
            assert np.array_equal(a.frame_idx, b.frame_idx) and np.array_equal(a.frames, b.frames)
            assert np.array_equal(a.pts_ns, b.pts_ns)
            assert np.array_equal(a.capture_ts - a.capture_ts[0], b.capture_ts - b.capture_ts[0])
    ends = [records.ControlRecord("end", sid, FRAMES) for sid in cams]
    assert sorted(got_end, key=str) == sorted(want_end, key=str) == sorted(ends, key=str)


def test_a_worker_gone_for_good_has_its_partitions_moved_to_the_others(
    broker, ray_session, weights, videos, reference, tmp_path
):
    cfg = pipeline_config(
        broker, weights, StorageConfig(url=f"file://{tmp_path}/store"), max_restarts=0
    )
    ingest_all(cfg, broker, videos)
    pool = WorkerPool.start(cfg, broker.bootstrap)
    try:
        run = pool.run(until_ended=set(videos), max_seconds=240)
        wait_for_frames(pool, TOTAL // 2)
        sigkill(pool.workers()["worker-1"])  # no restarts allowed: it stays dead
        summary = ray.get(run, timeout=300)
        assert pool.assignment() == {"worker-0": [0, 1, 2, 3]}
    finally:
        pool.kill()
    assert [w.partitions for w in summary.workers] == [[0, 1, 2, 3]]
    assert summary.recovered_streams >= 1  # worker-1's streams, from their checkpoints
    assert_same_outputs(broker, cfg, reference)
