"""Pooled ingest: many streams per ingest process, placed by ``ingest.streams_per_process``,
each stream's ingest whole (every frame, once, its own report), processes ended when empty."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import ray

from ausm_stream.operators.ingest_pool import IngestPlacement
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import IngestConfig, KafkaConfig, PipelineConfig
from tests.conftest import wait_for
from tests.e2e import FRAMES, consume, write_videos

pytestmark = pytest.mark.slow


def test_streams_share_processes_up_to_their_capacity_and_each_ingests_whole(
    broker, ray_session, tmp_path
):
    videos = write_videos(tmp_path, 5, frames=16)
    topic = f"pool-{uuid.uuid4().hex[:8]}"
    cfg = PipelineConfig(
        kafka=KafkaConfig(bootstrap=broker.bootstrap, frames_topic=topic, partitions=2),
        ingest=IngestConfig(streams_per_process=2),
    )
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    placement = IngestPlacement(cfg, broker.bootstrap, (64, 64))
    ingests = {sid: placement.start(sid, str(path)) for sid, path in videos.items()}
    placed = placement.processes()
    assert sorted(len(s) for s in placed.values()) == [1, 2, 2]  # 5 streams, 3 processes
    assert sorted(s for streams in placed.values() for s in streams) == sorted(videos)
    pids = {sid: ray.get(ing.process.pid.remote()) for sid, ing in ingests.items()}
    assert len(set(pids.values())) == 3
    reports = {sid: ray.get(ing.run, timeout=120) for sid, ing in ingests.items()}
    assert {sid: r.frames for sid, r in reports.items()} == dict.fromkeys(videos, 16)
    assert all(r.state == "ended" for r in reports.values())
    frames: dict[str, list[int]] = {sid: [] for sid in videos}
    for m in consume(broker, topic, 2):
        rec = records.decode(kafka.header(m.headers, records.KIND_HEADER), m.value, m.key.decode())
        if isinstance(rec, records.FrameChunk):
            frames[rec.stream_id] += rec.frame_idx.tolist()
    assert frames == {sid: list(range(16)) for sid in videos}  # each stream's, once
    for sid in videos:
        placement.release(sid)
    assert placement.processes() == {}
    gone = ingests["cam-0"].process  # a process whose last stream left ends (ray.kill is
    wait_for("its process to end", lambda: not alive(gone), timeout_s=30)  # asynchronous)


def alive(process) -> bool:
    try:
        ray.get(process.pid.remote(), timeout=10)
    except ray.exceptions.RayActorError:
        return False
    return True


def test_a_stream_stopped_in_a_shared_process_leaves_the_others_running(
    broker, ray_session, tmp_path
):
    videos = write_videos(tmp_path, 2, frames=FRAMES)
    topic = f"pool-{uuid.uuid4().hex[:8]}"
    cfg = PipelineConfig(
        kafka=KafkaConfig(bootstrap=broker.bootstrap, frames_topic=topic, partitions=1),
        ingest=IngestConfig(pace=True),  # 8 frames a second: the stop lands mid-file
    )
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    placement = IngestPlacement(cfg, broker.bootstrap, (64, 64))
    first, second = (placement.start(sid, str(path)) for sid, path in videos.items())
    assert first.process._actor_id == second.process._actor_id
    wait_for("frames of the first stream", lambda: ray.get(first.report()).frames >= 8)
    ray.get(first.stop(), timeout=30)
    stopped = ray.get(first.run, timeout=60)
    assert stopped.state == "stopped" and 0 < stopped.frames < FRAMES
    placement.release(first.stream_id)
    kept = ray.get(second.run, timeout=120)
    assert kept.frames == FRAMES and kept.state == "ended"
    chunks = [
        records.decode(kafka.header(m.headers, records.KIND_HEADER), m.value, m.key.decode())
        for m in consume(broker, topic, 1)
    ]
    ends = [c for c in chunks if isinstance(c, records.ControlRecord)]
    assert ends == [records.ControlRecord("end", second.stream_id, FRAMES)]  # a stop ends none
    produced = np.concatenate(
        [
            c.frame_idx
            for c in chunks
            if getattr(c, "stream_id", "") == first.stream_id and isinstance(c, records.FrameChunk)
        ]
    )
    assert produced.tolist() == list(range(len(produced)))
