"""Reading a partition's end and a key's newest record (against the real broker), and
what a frames record's key and a dead letter's reason must be."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from ausm_stream.errors import RecordError
from ausm_stream.pipeline import kafka
from ausm_stream.pipeline.config import KafkaConfig
from tests.pipeline.test_ids import HOSTILE_IDS


def test_the_end_offset_counts_every_record_of_the_last_batch(broker):
    cfg = KafkaConfig(bootstrap=broker.bootstrap, frames_topic=f"ends-{uuid.uuid4().hex[:6]}")
    kafka.ensure_topics(cfg, broker.bootstrap)
    producer = kafka.make_producer(cfg, broker.bootstrap)
    for batch in (1, 3, 5):  # records sent together travel as one batch
        for i in range(batch):
            kafka.send(producer, cfg.frames_topic, f"k{i}", b"x", "frames", partition=0)
        producer.flush()
    ends = kafka.end_offsets(cfg, broker.bootstrap, cfg.frames_topic, [0, 1])
    assert ends == {0: 9, 1: 0}
    newest = kafka.last_record_of(cfg, broker.bootstrap, cfg.frames_topic, 0, "k2", window=2)
    assert newest is not None and newest.offset == 6  # in the last batch, found backwards
    assert kafka.last_record_of(cfg, broker.bootstrap, cfg.frames_topic, 0, "none") is None


def frames_message(key: bytes | None, partition: int) -> ConsumerRecord:
    return ConsumerRecord("ausm.frames", partition, -1, 41, 0, 0, key, b"", [], None, 0, 0, 0)


@pytest.mark.parametrize(
    "key, partition, reason",
    [
        (None, 0, "ausm.frames/0/41 has no key"),
        (b"", 0, "ausm.frames/0/41 has no key"),
        (b"cam-1", 3, "stream 'cam-1' at ausm.frames/3/41 is on partition 3; its key's is 0"),
        (b"\xff\xfe", 0, r"key b'\\xff\\xfe' at ausm.frames/0/41 is not UTF-8"),
        *[
            (bad.encode(), 0, "at ausm.frames/0/41 is not a stream id")
            for bad in HOSTILE_IDS
            if bad
        ],
    ],
)
def test_a_frames_record_must_be_keyed_by_a_stream_id_on_its_partition(key, partition, reason):
    with pytest.raises(RecordError, match=reason):
        kafka.stream_key(frames_message(key, partition), partitions=4)
    assert kafka.stream_key(frames_message(b"cam-7", 1), partitions=4) == "cam-7"


def test_a_dead_letters_reason_is_cut_to_4_kib():
    """A 0.33 MiB record once made a 17 MiB reason, and the dead letter itself was refused."""
    assert kafka.error_header("short") == b"short"
    long = "frames record schema does not match: got " + "é" * 9_000_000
    cut = kafka.error_header(long)
    assert len(cut) <= kafka.MAX_ERROR_HEADER_BYTES == 4096
    text = cut.decode()  # still UTF-8: not cut inside a character
    assert text.startswith("frames record schema does not match") and "cut" in text[-60:]


def test_a_topic_created_again_has_another_id(broker):
    from kafka import KafkaAdminClient

    cfg = KafkaConfig(bootstrap=broker.bootstrap, frames_topic=f"life-{uuid.uuid4().hex[:6]}")
    kafka.ensure_topics(cfg, broker.bootstrap)
    first = kafka.topic_id(cfg, broker.bootstrap, cfg.frames_topic)
    assert first and first == kafka.topic_id(cfg, broker.bootstrap, cfg.frames_topic)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.delete_topics([cfg.frames_topic])
    finally:
        admin.close()
    kafka.ensure_topics(cfg, broker.bootstrap)
    second = kafka.topic_id(cfg, broker.bootstrap, cfg.frames_topic)
    assert second and second != first


def test_a_producer_holding_records_for_absent_brokers_closes_at_once():
    """kafka-python's ``close(timeout=0)`` raises while records are pending; ``close_now``
    gives them up (their futures fail) and stops the producer's retries."""
    from ausm_stream.pipeline.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        cfg = KafkaConfig(bootstrap=broker.bootstrap, frames_topic="close-now", partitions=1)
        kafka.ensure_topics(cfg, broker.bootstrap)
        producer = kafka.make_producer(cfg, broker.bootstrap)
        kafka.send(producer, cfg.frames_topic, "cam", b"x", "frames").get(10)
    pending = kafka.send(producer, cfg.frames_topic, "cam", b"y", "frames")  # broker gone
    started = time.monotonic()
    kafka.close_now(producer)
    assert time.monotonic() - started < kafka.STOP_FLUSH_S
    assert pending.is_done and pending.failed()
    assert not producer._sender.is_alive()
