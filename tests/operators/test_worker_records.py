"""Records a worker cannot trust go to the dead-letter topic and the stream goes on (real
broker): a frames record that inflates to 512 MiB, keys that would name paths, a record
without a key or on another partition than its key's, frames far ahead, and a reason too
long for a header."""

from __future__ import annotations

import pytest

from ausm_stream.operators.processor import MAX_FRAME_JUMP
from ausm_stream.operators.worker import ERROR_HEADER, SegmentationWorker
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import StorageConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store
from tests.e2e import camera_chunk, consume, pipeline_config
from tests.poison import inflating_chunk, wide_record

pytestmark = pytest.mark.slow


def test_records_a_worker_cannot_trust_are_dead_lettered_and_the_stream_goes_on(
    broker, weights, tmp_path
):
    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/data/store"))
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    producer = kafka.make_producer(cfg.kafka, broker.bootstrap)
    topic, cam = cfg.kafka.frames_topic, kafka.partition_for("cam", cfg.kafka.partitions)

    def send(value: bytes, key: str | None = "cam", partition: int = cam, kind: str = "frames"):
        headers = [(records.KIND_HEADER, kind.encode())]
        producer.send(
            topic, key=key and key.encode(), value=value, headers=headers, partition=partition
        )

    def chunk(stream: str, first: int, n: int = 8) -> bytes:
        return records.encode(camera_chunk(stream, first, n))[0]

    send(chunk("cam", 0))
    send(inflating_chunk(8))
    send(chunk("cam", 8), key=None)  # keyless
    send(chunk("cam", 8), partition=(cam + 1) % cfg.kafka.partitions)  # not its key's partition
    for hostile in ("../../x", "../registry/streams/evil"):
        send(chunk(hostile, 0), key=hostile, partition=kafka.partition_for(hostile, 4))
    send(chunk("cam", 8 + MAX_FRAME_JUMP))  # would make every later frame look replayed
    send(wide_record())
    send(chunk("cam", 8))
    send(records.encode(records.ControlRecord("end", "cam", 16))[0], kind="end")
    producer.flush()

    status = SegmentationWorker(cfg, broker.bootstrap, list(range(4))).run(
        until_ended={"cam"}, max_seconds=120
    )
    assert status.streams["cam"].ended and status.streams["cam"].frames_out == 16
    assert status.streams["cam"].gaps == 0
    assert status.dead_letters == 7
    dead = consume(broker, cfg.kafka.dead_letter_topic, cfg.kafka.partitions)
    reasons = [kafka.header(m.headers, ERROR_HEADER) for m in dead]
    assert all(len(m.value) and len(dict(m.headers)[ERROR_HEADER]) <= 4096 for m in dead)
    for phrase in [
        "rgb declares 536870912 bytes",
        "has no key",
        "is on partition",
        "key '../../x'",
        "key '../registry/streams/evil'",
        f"jump {MAX_FRAME_JUMP + 1} frames",
        "schema does not match",
    ]:
        assert sum(phrase in r for r in reasons) == 1, (phrase, [r[:200] for r in reasons])
    frames = read_dataset(open_store(cfg.storage), "frames")
    assert sorted(frames["frame_idx"].to_pylist()) == list(range(16))
    written = {p.relative_to(tmp_path).parts[:3] for p in tmp_path.rglob("*") if p.is_file()}
    assert written <= {
        ("data", "store", top) for top in ("checkpoints", "offsets", "tracks", "frames")
    }
