"""Forty streams through one worker that keeps four states live and eight in host memory.

Real parts: the Tansu broker, the moto S3 endpoint (the object-store tier is the
checkpoints there), a Ray actor. Frames come in two rounds, so between them most streams
leave the worker for the object store and come back at their next record.
"""

from __future__ import annotations

import time
import uuid

import pyarrow.compute as pc
import pytest
import ray

from ausm_stream.model import AUSM
from ausm_stream.operators.worker import start_worker
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import WorkerConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store
from tests.conftest import s3_storage
from tests.e2e import camera_chunk, pipeline_config

pytestmark = pytest.mark.slow

STREAMS = [f"cam-{i:02d}" for i in range(40)]
ROUND = 8
RESIDENT, HOST_STATES = 4, 8
MARGIN = 192 * 2**20
"""What else a worker holds while it runs, beyond the model and the states: Kafka fetch
buffers and the frames fetched and queued (~50 MB measured), the checkpoint writer's backlog
(``CHECKPOINT_BACKLOG`` checkpoints, ~4 copies of a state each while encoded and uploaded),
the activations of a batch, sink buffers and allocator slack."""


def send_round(cfg, producer, first: int, end: bool) -> None:
    for sid in STREAMS:
        chunk = camera_chunk(sid, first, ROUND)
        recs = [chunk] + ([records.ControlRecord("end", sid, first + ROUND)] if end else [])
        for rec in recs:
            value, kind = records.encode(rec)
            part = kafka.partition_for(sid, cfg.kafka.partitions)
            kafka.send(producer, cfg.kafka.frames_topic, sid, value, kind, partition=part)
    producer.flush()


def run_worker(cfg, broker, budget: int | None) -> tuple[object, list[object], int]:
    """Both rounds through one worker actor; its final status, the statuses seen until the
    second round was sent, and its resident memory before any record. With a host ``budget``
    the second round waits until the first one's states have settled within it."""
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    producer = kafka.make_producer(cfg.kafka, broker.bootstrap)
    worker = start_worker(cfg, broker.bootstrap, list(range(cfg.kafka.partitions)))
    try:
        # A run with nothing to read first: the consumer, the store's client and the threads
        # are fixed costs of a worker, not of its streams.
        baseline = ray.get(worker.run.remote(idle_timeout_s=1.0, max_seconds=30)).rss_bytes
        run = worker.run.remote(until_ended=set(STREAMS), max_seconds=400)
        send_round(cfg, producer, 0, end=False)
        seen = []
        deadline = time.monotonic() + 300
        while True:  # round one done and its streams settled where the budgets put them
            status = ray.get(worker.status.remote())
            seen.append(status)
            done = sum(s.frames_out for s in status.streams.values()) == len(STREAMS) * ROUND
            settled = budget is None or (
                status.stored_streams and status.host_state_bytes <= budget
            )
            if done and settled:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        send_round(cfg, producer, ROUND, end=True)
        final = ray.get(run, timeout=400)
    finally:
        ray.kill(worker, no_restart=True)
    return final, seen, baseline


def outputs(cfg) -> dict[str, list[tuple]]:
    table = read_dataset(open_store(cfg.storage))
    cols = ["frame_idx", "track_id", "label", "score", "mask_rle", "bbox"]
    return {
        sid: sorted(
            tuple(map(str, r.values()))
            for r in table.filter(pc.field("stream_id") == sid).select(cols).to_pylist()
        )
        for sid in STREAMS
    }


def test_forty_streams_page_through_tiers_with_outputs_of_all_resident(
    ray_session, broker, s3_endpoint, weights
):
    dtype = WorkerConfig().state_dtype  # the worker's default
    state_bytes = len(AUSM.from_weights(weights, state_dtype=dtype).init_state(0).to_bytes())
    budgets = {
        "resident_streams": RESIDENT,
        "host_state_bytes": HOST_STATES * state_bytes,
        "max_batch": RESIDENT,
    }
    paged = pipeline_config(
        broker, weights, s3_storage(s3_endpoint, f"many-{uuid.uuid4().hex[:8]}"), **budgets
    )
    final, seen, baseline = run_worker(paged, broker, budgets["host_state_bytes"])

    # Every frame processed exactly once.
    frames = read_dataset(open_store(paged.storage), "frames")
    for sid in STREAMS:
        idx = frames.filter(pc.field("stream_id") == sid)["frame_idx"].to_pylist()
        assert sorted(idx) == list(range(2 * ROUND)), sid
    assert all(s.frames_out == 2 * ROUND and s.ended for s in final.streams.values())
    # The tiers held what their budgets allow, and states went through all three.
    between = seen[-1]
    assert all(s.resident_streams <= RESIDENT for s in seen)
    residences = [s.residence for s in between.streams.values()]
    assert residences.count("resident") == between.resident_streams > 0
    assert residences.count("host") == between.host_streams > 0
    assert residences.count("stored") == between.stored_streams > 0
    assert final.page_outs > 0 and final.page_ins > 0
    assert final.store_page_ins >= between.stored_streams  # back from the object store
    # Memory: model + R states + the host budget + the stated margin, over the idle worker.
    peak = max(s.rss_bytes for s in seen)
    bound = RESIDENT * state_bytes + HOST_STATES * state_bytes + MARGIN
    assert peak - baseline <= bound, (peak - baseline, bound)

    # Outputs bit-identical to a worker that keeps all forty states resident.
    straight = pipeline_config(
        broker, weights, s3_storage(s3_endpoint, f"many-{uuid.uuid4().hex[:8]}"), max_batch=4
    )
    reference, _, _ = run_worker(straight, broker, None)
    assert reference.stored_streams == 0 and reference.page_outs == 0
    ours, theirs = outputs(paged), outputs(straight)
    assert any(ours.values())
    assert ours == theirs
