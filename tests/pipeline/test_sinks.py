"""The worker's sinks: the tracks topic's windows."""

from __future__ import annotations

import time

import numpy as np

from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import KafkaConfig
from ausm_stream.pipeline.records import FrameTracks
from ausm_stream.pipeline.sinks import KafkaTrackSink


def frame_tracks(stream_id: str, frame_idx: int, tracks: int) -> FrameTracks:
    masks = np.zeros((tracks, 8, 8), dtype=bool)
    masks[:, 2:5, 2:5] = True
    return FrameTracks(
        stream_id,
        frame_idx,
        frame_idx,
        1_700_000_000_000_000_000 + frame_idx * 1000,
        8,
        8,
        np.arange(1, tracks + 1),
        ["circle"] * tracks,
        np.ones(tracks, np.float32),
        masks,
        np.tile(np.array([[2, 2, 5, 5]], np.float32), (tracks, 1)),
        np.full(tracks, -1),
    )


def test_tracks_topic_gets_one_message_per_stream_and_window_with_tracks(broker):
    cfg = KafkaConfig(bootstrap=broker.bootstrap, tracks_topic="sink-windows", partitions=1)
    kafka.ensure_topics(cfg, broker.bootstrap)
    sink = KafkaTrackSink(kafka.make_producer(cfg, broker.bootstrap), cfg.tracks_topic, window=4)
    sent: list[list[tuple[str, int]]] = []

    def add(stream_id: str, frame_idx: int, tracks: int = 1) -> None:
        frame = frame_tracks(stream_id, frame_idx, tracks)
        sink.add(frame, records.tracks_batch([frame], "m@1"))

    for i in range(4):  # a full window: sent when its last frame is written
        add("a", i, tracks=2 if i == 1 else 1)
    for i in range(4, 8):  # a window without tracks: nothing sent
        add("a", i, tracks=0)
    add("a", 8)
    add("a", 9)
    add("b", 0)
    add("a", 13)  # frames 10-12 never came: the 8-11 window is complete
    sink.flush()  # the stream ends: partial windows go out
    consumer = kafka.make_consumer(cfg, broker.bootstrap)
    kafka.assign(consumer, cfg.tracks_topic, [0])
    deadline = time.monotonic() + 30
    while sum(len(m) for m in sent) < 9 and time.monotonic() < deadline:
        for msgs in consumer.poll(timeout_ms=1000).values():
            for msg in msgs:
                rows = records.from_ipc(msg.value, records.TRACKS_SCHEMA, "tracks")
                ids = rows.column("stream_id").to_pylist()
                assert set(ids) == {msg.key.decode()}
                sent.append(list(zip(ids, rows.column("frame_idx").to_pylist(), strict=True)))
    consumer.close()
    a0 = [("a", 0), ("a", 1), ("a", 1), ("a", 2), ("a", 3)]
    assert sent[:2] == [a0, [("a", 8), ("a", 9)]]
    assert sorted(sent[2:]) == [[("a", 13)], [("b", 0)]]
