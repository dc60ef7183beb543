"""Reading a partition's end and a key's newest record, against the real broker."""

from __future__ import annotations

import uuid

from ausm_stream.pipeline import kafka
from ausm_stream.pipeline.config import KafkaConfig


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
