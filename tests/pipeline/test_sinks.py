"""The worker's sinks: the tracks topic's windows, windows carried across a restart, and
windows kept while the object store fails."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ausm_stream.errors import InvalidInputError
from ausm_stream.pipeline import kafka
from ausm_stream.pipeline.config import KafkaConfig
from ausm_stream.pipeline.sinks import KafkaTrackSink, ParquetSink
from ausm_stream.pipeline.storage import Backoff, FileStore, ServiceHealth
from ausm_stream.pipeline.tracks import FrameTracks, decode_tracks, encode_tracks, track_message_id
from tests.outages import log_keeping_broker
from tests.pipeline.test_ids import HOSTILE_IDS
from tests.pipeline.test_storage import FlakyStore


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
        np.full(tracks, -1),
    )


def test_tracks_topic_gets_one_message_per_stream_and_window_with_tracks(broker):
    cfg = KafkaConfig(bootstrap=broker.bootstrap, tracks_topic="sink-windows", partitions=1)
    kafka.ensure_topics(cfg, broker.bootstrap)
    producer = kafka.make_producer(cfg, broker.bootstrap)
    sink = KafkaTrackSink(producer, cfg.tracks_topic, window=4, model_version="m@1")
    sent: list[list[tuple[str, int]]] = []
    ids_seen: list[tuple[str, ...]] = []

    def add(stream_id: str, frame_idx: int, tracks: int = 1) -> None:
        frame = frame_tracks(stream_id, frame_idx, tracks)
        sink.add(frame, encode_tracks([frame], "m@1"))

    for i in range(4):  # a full window: sent when its last frame is written
        add("a", i, tracks=2 if i == 1 else 1)
    for i in range(4, 8):  # a window without tracks: nothing sent
        add("a", i, tracks=0)
    add("a", 8)
    add("a", 9)
    add("b", 0)
    add("a", 13)  # frames 10-12 never came: the 8-11 window is complete
    sink.end("a")  # the streams end: partial windows go out
    sink.end("b")
    producer.flush()
    consumer = kafka.make_consumer(cfg, broker.bootstrap)
    kafka.assign(consumer, cfg.tracks_topic, [0])
    deadline = time.monotonic() + 30
    while sum(len(m) for m in sent) < 9 and time.monotonic() < deadline:
        for msgs in consumer.poll(timeout_ms=1000).values():
            for msg in msgs:
                rows = decode_tracks(msg.value)
                ids = rows.column("stream_id").to_pylist()
                assert set(ids) == {msg.key.decode()}
                sent.append(list(zip(ids, rows.column("frame_idx").to_pylist(), strict=True)))
                ids_seen.append(track_message_id(msg.headers))
    consumer.close()
    a0 = [("a", 0), ("a", 1), ("a", 1), ("a", 2), ("a", 3)]
    assert sent[:2] == [a0, [("a", 8), ("a", 9)]]
    assert sorted(sent[2:]) == [[("a", 13)], [("b", 0)]]
    # Each message says which stream, frames and model it holds: how consumers drop replays.
    assert ids_seen[:2] == [("a", "0", "3", "m@1"), ("a", "8", "9", "m@1")]
    assert sorted(ids_seen[2:]) == [("a", "13", "13", "m@1"), ("b", "0", "0", "m@1")]


def test_a_window_carried_across_a_restart_is_written_with_the_same_bytes(tmp_path):
    def run(sink: ParquetSink, frames: range) -> None:
        for i in frames:
            frame = frame_tracks("cam", i, tracks=i % 3)
            sink.add(frame, encode_tracks([frame], "m@1"))

    straight = ParquetSink(FileStore(tmp_path / "straight"), "m@1", parquet_frames=4)
    run(straight, range(10))
    straight.end("cam")
    first = ParquetSink(FileStore(tmp_path / "restarted"), "m@1", parquet_frames=4)
    run(first, range(6))  # stopped mid-window: frames 4-5 are only buffered
    infos, rows = first.pending("cam")
    assert infos.column("frame_idx").to_pylist() == [4, 5] and rows.num_rows == 1 + 2
    assert not list((tmp_path / "restarted").rglob("part-*000005.parquet"))  # no partial file
    second = ParquetSink(FileStore(tmp_path / "restarted"), "m@1", parquet_frames=4)
    second.restore("cam", infos, rows)
    run(second, range(6, 10))
    second.end("cam")

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}

    expected = files(tmp_path / "straight")
    assert len(expected) == 2 * 3  # tracks and frames tables, windows 0-3, 4-7, 8-9
    assert files(tmp_path / "restarted") == expected


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_a_hostile_stream_id_never_names_a_parquet_path(tmp_path, bad):
    sink = ParquetSink(FileStore(tmp_path / "a" / "b" / "store"), "m@1", parquet_frames=4)
    frame = frame_tracks(bad, 0, tracks=1)
    sink.add(frame, encode_tracks([frame], "m@1"))
    with pytest.raises(InvalidInputError, match="stream id"):
        sink.end(bad)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_window_the_store_fails_stays_buffered_until_written_with_the_same_bytes(tmp_path):
    """A failed Parquet write keeps its window (in order, ahead of later ones), tried again
    only after the back-off; while the stream owes it, no checkpoint may take its buffer."""
    now = [0.0]
    health = ServiceHealth(clock=lambda: now[0])

    def add(sink: ParquetSink, frames: range) -> None:
        for i in frames:
            frame = frame_tracks("cam", i, tracks=i % 3)
            sink.add(frame, encode_tracks([frame], "m@1"))

    straight = ParquetSink(FileStore(tmp_path / "straight"), "m@1", parquet_frames=4)
    add(straight, range(14))
    straight.end("cam")
    store = FlakyStore(tmp_path / "flaky")
    backoff = Backoff(1.0, 4.0, clock=lambda: now[0])
    sink = ParquetSink(store, "m@1", parquet_frames=4, backoff=backoff, health=health)
    store.down = True
    add(sink, range(6))  # window 0-3 fails once; frames 4-5 are buffered
    assert sink.owes("cam") and store.failures == 1 and health.errors == 1
    with pytest.raises(RuntimeError, match="not written yet"):
        sink.pending("cam")  # the commit order: no checkpoint covers an unwritten window
    add(sink, range(6, 10))  # window 4-7 completes within the back-off: no try, kept behind
    assert [len(w) for w in sink.owed["cam"]] == [4, 4] and store.failures == 1
    now[0] += 1.0
    assert not sink.retry() and store.failures == 2  # tried after the back-off: still down
    now[0] += 1.5
    assert not sink.retry() and store.failures == 2  # the next wait is 2 s
    store.down = False
    now[0] += 0.5
    assert sink.retry() and not sink.owes("cam")  # both windows, in order
    assert health.outage_s == 0 and health.errors == 2
    infos, _ = sink.pending("cam")
    assert infos.column("frame_idx").to_pylist() == [8, 9]  # the open window only
    add(sink, range(10, 14))
    store.fail_next = 1
    sink.end("cam")  # the last, partial window fails once ...
    assert sink.owes("cam")
    now[0] += 1.0
    assert sink.retry()  # ... and is written after its back-off

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}

    assert files(tmp_path / "flaky") == files(tmp_path / "straight")
    assert len(files(tmp_path / "straight")) == 2 * 4


def test_a_bug_in_a_window_write_is_raised_and_does_not_hold_the_stream(tmp_path):
    """Only store errors keep a window: anything else is the caller's bug, raised as before
    (the worker's run fails and replays from its last checkpoint)."""
    sink = ParquetSink(FlakyStore(tmp_path), "m@1", parquet_frames=4)
    frame = frame_tracks("cam", 3, tracks=1)
    rows = encode_tracks([frame], "m@1")
    sink.add(frame_tracks("cam", 2, tracks=1), rows.slice(0, 0))
    with pytest.raises(Exception) as raised:
        sink.add(frame, rows.drop_columns(["score"]))  # rows that do not fit the schema
    assert not isinstance(raised.value, OSError)
    assert not sink.owes("cam")


def test_a_tracks_window_is_owed_until_acknowledged_and_sent_again_when_given_up(s3_endpoint):
    """The broker (its log kept in S3) goes away after a window is sent: the producer gives
    the window up (a 2 s delivery timeout here), the window is owed again (no checkpoint may
    cover it) and, the broker back, it is sent again after the back-off and delivered once."""
    from kafka import KafkaProducer

    broker = log_keeping_broker(s3_endpoint)
    try:
        cfg = KafkaConfig(bootstrap=broker.bootstrap, tracks_topic="sink-outage", partitions=1)
        kafka.ensure_topics(cfg, broker.bootstrap)
        producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap,
            linger_ms=5,
            request_timeout_ms=1000,
            delivery_timeout_ms=2000,
            reconnect_backoff_max_ms=200,
        )
        health = ServiceHealth("Kafka brokers")
        sink = KafkaTrackSink(producer, cfg.tracks_topic, 4, "m@1", Backoff(0.2, 0.5), health)

        def add(frames: range) -> None:
            for i in frames:
                frame = frame_tracks("cam", i, tracks=1)
                sink.add(frame, encode_tracks([frame], "m@1"))

        add(range(4))
        assert sink.owes("cam")  # sent, not yet acknowledged
        deadline = time.monotonic() + 10
        while not sink.retry() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not sink.owes("cam") and health.errors == 0
        broker.stop()
        add(range(4, 8))
        with pytest.raises(RuntimeError, match="not written yet"):
            sink.pending("cam")
        deadline = time.monotonic() + 10
        while not health.errors and time.monotonic() < deadline:
            sink.retry()
            time.sleep(0.1)
        assert health.errors >= 1 and sink.owes("cam")  # given up by the producer: owed
        assert "frames 4-7" in (health.last_error or "")
        broker.start()  # the same port, the same log
        deadline = time.monotonic() + 30
        while not sink.retry() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not sink.owes("cam") and health.outage_s == 0
        consumer = kafka.make_consumer(cfg, broker.bootstrap)
        kafka.assign(consumer, cfg.tracks_topic, [0])
        got: list[tuple[str, ...]] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500).values():
                got.extend(track_message_id(m.headers) for m in msgs)
        time.sleep(0.5)
        for msgs in consumer.poll(timeout_ms=500).values():
            got.extend(track_message_id(m.headers) for m in msgs)
        consumer.close()
        assert got == [("cam", "0", "3", "m@1"), ("cam", "4", "7", "m@1")]  # each once
    finally:
        broker.stop()
