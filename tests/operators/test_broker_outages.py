"""Kafka broker outages: nothing is lost while the brokers are away, and everything resumes.

The embedded broker here keeps its log in S3 (moto), as ``kafka.embedded_log: store`` does, so
it can be stopped and started again on its port like a restarted Kafka cluster. Producers
retry through the outage (idempotent, in order); what waits is reported (ingest's drops, the
worker's broker health); a tracks window is not covered by a checkpoint before the brokers
acknowledge it. (The pieces: ``tests/pipeline/test_sinks.py`` for a window the producer gives
up, ``tests/pipeline/test_ingest.py`` for ingest starting again.)
"""

from __future__ import annotations

import threading
import time

import pytest

from ausm_stream.operators.worker import SegmentationWorker
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import IngestConfig
from ausm_stream.pipeline.ingest import IngestJob
from ausm_stream.pipeline.storage import open_store
from tests.conftest import wait_for
from tests.e2e import (
    CAPTURE_START_NS,
    check_every_frame_once,
    consume,
    dataset_files,
    ingest_all,
    pipeline_config,
    storage_for,
    topic_rows,
    write_videos,
)
from tests.outages import log_keeping_broker

OUTAGE_S = 40.0
FRAMES = 96  # 12 s of 8 fps video per camera, produced at its own pace
STREAMS = [f"cam-{i}" for i in range(4)]


@pytest.mark.slow
def test_a_broker_outage_mid_run_loses_nothing_and_every_stream_resumes(
    broker, weights, s3_endpoint, tmp_path
):
    """Four cameras (files produced at their own pace) and a worker; the broker stops for
    ``OUTAGE_S`` seconds mid-stream (40 here, to keep the suite short; 90 passes the same way)
    and starts again. Nothing is restarted: the ingest jobs and the worker's run go on, and
    the frames topic, the tracks topic and the Parquet files equal a run without the outage
    (each frame once in the frames topic: the producers' retries duplicate nothing)."""
    videos = write_videos(tmp_path / "videos", len(STREAMS), frames=FRAMES)
    reference = pipeline_config(broker, weights, storage_for("s3", tmp_path, s3_endpoint))
    ingest_all(reference, broker, videos, frames=FRAMES)
    SegmentationWorker(reference, broker.bootstrap, list(range(4))).run(
        until_ended=set(STREAMS), max_seconds=240
    )

    outage = log_keeping_broker(s3_endpoint)
    try:
        cfg = pipeline_config(outage, weights, storage_for("s3", tmp_path, s3_endpoint))
        kafka.ensure_topics(cfg.kafka, outage.bootstrap)
        worker = SegmentationWorker(cfg, outage.bootstrap, list(range(4)))
        done: list = []
        runner = threading.Thread(
            target=lambda: done.append(worker.run(until_ended=set(STREAMS), max_seconds=400))
        )
        runner.start()
        paced = IngestConfig(pace=True, reconnect_initial_s=0.2, reconnect_max_s=2.0)
        jobs = []
        for sid, path in videos.items():
            job = IngestJob(sid, str(path), (128, 128), cfg.kafka, outage.bootstrap, paced)
            job.ingest.clock = lambda: CAPTURE_START_NS  # the reference's capture clock
            jobs.append(job)
        ingesting = [threading.Thread(target=job.run) for job in jobs]
        for t in ingesting:
            t.start()
        wait_for(
            "every camera's first chunks produced",
            lambda: all(job.report().produced >= 16 for job in jobs),
            timeout_s=60,
        )
        outage.stop()  # returns once the broker's process is gone
        # Cameras whose last records the broker had not taken yet (the broker may answer for
        # a few seconds after it is told to stop, and cameras start a little apart).
        delivering = [job.report().state != "ended" for job in jobs]
        assert sum(delivering) >= 2, "the outage began after the cameras ended"
        time.sleep(OUTAGE_S)
        during = [(job.report().state, list(job.report().drops)) for job in jobs]
        stalled = worker.broker_health.outage_s
        outage.start()  # the same port, the same log
        for t in ingesting:
            t.join(120)
        runner.join(300)
        assert done, "the worker's run did not end"

        # Seen while it lasted: each camera still delivering reported the brokers away, and
        # waits (producing, or delivering its last records); so did the worker.
        for waiting, (state, drops) in zip(delivering, during, strict=True):
            if waiting:
                assert state == "reconnecting"
                assert any("Kafka brokers" in d for d in drops), drops
        assert stalled > 5 and worker.broker_health.errors >= 1
        assert worker.broker_health.outage_s == 0  # and over
        for job in jobs:
            assert (job.report().state, job.report().frames) == ("ended", FRAMES)

        status = done[0]
        assert status.recovered_streams == 0  # one run throughout
        assert {s: (st.frames_out, st.ended) for s, st in status.streams.items()} == (
            dict.fromkeys(STREAMS, (FRAMES, True))
        )
        frames = {sid: [] for sid in STREAMS}
        for msg in consume(outage, cfg.kafka.frames_topic, cfg.kafka.partitions):
            if kafka.header(msg.headers, records.KIND_HEADER) == "frames":
                frames[msg.key.decode()].append(msg.offset)
        got = open_store(cfg.storage)
        check_every_frame_once(got, dict.fromkeys(STREAMS, FRAMES))
        assert dataset_files(got) == dataset_files(open_store(reference.storage))
        assert topic_rows(outage, cfg)[0].equals(topic_rows(broker, reference)[0])
        chunks = FRAMES // IngestConfig().chunk_frames
        assert {sid: len(offsets) for sid, offsets in frames.items()} == dict.fromkeys(
            STREAMS, chunks
        )  # no chunk twice
    finally:
        outage.stop()
