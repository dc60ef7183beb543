"""Ingest of real H.264 files into a real broker: dense indexes, chunks, resampling, end."""

from __future__ import annotations

import numpy as np
import pytest

from ausm_stream.errors import ConflictError, SourceError
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import IngestConfig, KafkaConfig
from ausm_stream.pipeline.ingest import Ingest, decode_source, redact_credentials
from ausm_stream.pipeline.video_files import write_h264


def read_all(broker, cfg: KafkaConfig):
    consumer = kafka.make_consumer(cfg, broker.bootstrap)
    kafka.assign(consumer, cfg.frames_topic, range(cfg.partitions))
    out = []
    for _ in range(20):
        polled = consumer.poll(timeout_ms=500)
        if not polled and out:
            break
        for msgs in polled.values():
            out += [
                records.decode(
                    kafka.header(m.headers, records.KIND_HEADER), m.value, m.key.decode()
                )
                for m in msgs
            ]
    consumer.close()
    return out


@pytest.mark.parametrize("fps, expected", [(None, 24), (4.0, 12)])
def test_file_ingest_produces_dense_chunks_and_an_end_record(broker, tmp_path, fps, expected):
    video = generate_video("test", 1, ShapesSpec(size=(96, 160), frames=24))
    path = write_h264(tmp_path / "v.mp4", video.frames, fps=8)
    cfg = KafkaConfig(bootstrap=broker.bootstrap, frames_topic=f"frames-{fps}", partitions=2)
    kafka.ensure_topics(cfg, broker.bootstrap)
    producer = kafka.make_producer(cfg, broker.bootstrap)
    report = Ingest(
        "cam-9", str(path), (64, 64), producer, cfg, IngestConfig(chunk_frames=5, fps=fps)
    ).run()
    assert report.frames == expected and report.reconnects == 0
    got = read_all(broker, cfg)
    chunks = [r for r in got if isinstance(r, records.FrameChunk)]
    idx = np.concatenate([c.frame_idx for c in chunks])
    assert idx.tolist() == list(range(expected))
    assert [len(c) for c in chunks][:-1] == [5] * (len(chunks) - 1)
    assert chunks[0].frames.shape[1:] == (64, 64, 3)
    assert (chunks[0].source_height, chunks[0].source_width) == (96, 160)
    pts = np.concatenate([c.pts_ns for c in chunks])
    assert np.all(np.diff(pts) > 0)
    if fps:  # one frame per 1/4 s out of an 8 fps file
        assert np.allclose(np.diff(pts), 250_000_000, atol=2_000_000)
    assert got[-1] == records.ControlRecord("end", "cam-9", expected)


def test_missing_file_is_a_clear_error(broker, tmp_path):
    cfg = KafkaConfig(bootstrap=broker.bootstrap)
    producer = kafka.make_producer(cfg, broker.bootstrap)
    with pytest.raises(SourceError, match="cannot open video source"):
        Ingest("cam-0", str(tmp_path / "none.mp4"), (64, 64), producer, cfg, IngestConfig()).run()


@pytest.mark.parametrize(
    "text, shown",
    [
        ("rtsp://admin:hunter2@cam-7.local/stream", "rtsp://***@cam-7.local/stream"),
        ("rtsp://admin@cam-7.local:554/s", "rtsp://***@cam-7.local:554/s"),
        ("http://u:p@ss@host/x?y=z@w", "http://***@host/x?y=z@w"),  # an '@' left unescaped
        (
            "cannot open 'rtsp://a:b@h/s': refused: 'rtsp://a:b@h/s'",
            "cannot open 'rtsp://***@h/s': refused: 'rtsp://***@h/s'",
        ),
        ("rtsp://cam-7.local/stream", "rtsp://cam-7.local/stream"),
        ("/videos/a@b.mp4", "/videos/a@b.mp4"),
        ("mailto:someone@example.com", "mailto:someone@example.com"),
    ],
)
def test_credentials_in_source_urls_are_redacted(text, shown):
    assert redact_credentials(text) == shown


def test_a_source_error_never_shows_the_credentials():
    with pytest.raises(SourceError) as raised:
        next(decode_source("rtsp://admin:hunter2@127.0.0.1:9/stream", (64, 64), timeout_s=2))
    assert "hunter2" not in str(raised.value) and "rtsp://***@127.0.0.1:9" in str(raised.value)


def test_a_file_that_breaks_midway_ends_the_stream_without_repeats(broker, tmp_path):
    video = generate_video("test", 2, ShapesSpec(size=(64, 64), frames=40))
    path = write_h264(tmp_path / "v.mp4", video.frames, fps=8)
    data = path.read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[: len(data) * 2 // 3])  # the tail of the file is gone
    cfg = KafkaConfig(bootstrap=broker.bootstrap, frames_topic="broken", partitions=1)
    kafka.ensure_topics(cfg, broker.bootstrap)
    report = Ingest(
        "cam-b",
        str(broken),
        (64, 64),
        kafka.make_producer(cfg, broker.bootstrap),
        cfg,
        IngestConfig(chunk_frames=4),
    ).run()
    assert 0 < report.frames < 40 and report.reconnects <= 1
    assert len(report.drops) == 1 and f"after frame {report.frames}" in report.drops[0]
    chunks = [r for r in read_all(broker, cfg) if isinstance(r, records.FrameChunk)]
    idx = np.concatenate([c.frame_idx for c in chunks])
    assert idx.tolist() == list(range(report.frames))


def test_a_stream_reset_after_its_end_is_numbered_on_and_prompts_go_between_chunks(
    broker, tmp_path
):
    """What a stream added again after removal looks like to an ingest that was not told
    where it starts (``ausm-stream ingest`` of an external stream): the reset says; and a
    prompt sent through the ingest lands between its chunks, at the next frame."""
    video = generate_video("test", 2, ShapesSpec(size=(64, 64), frames=16))
    path = write_h264(tmp_path / "v.mp4", video.frames, fps=8)
    cfg = KafkaConfig(bootstrap=broker.bootstrap, frames_topic="frames-reset", partitions=1)
    kafka.ensure_topics(cfg, broker.bootstrap)
    producer = kafka.make_producer(cfg, broker.bootstrap)
    for record in (
        records.ControlRecord("end", "cam", 40),
        records.ControlRecord("reset", "cam", 40),
    ):
        value, kind = records.encode(record)
        kafka.send(producer, cfg.frames_topic, "cam", value, kind).get(timeout=30)
    ingest = Ingest("cam", str(path), (64, 64), producer, cfg, IngestConfig(chunk_frames=8))
    with kafka.TopicReader(cfg, broker.bootstrap) as reader:
        last = records.decode("reset", reader.last_record_of(cfg.frames_topic, 0, "cam").value)
    original_flush = ingest._flush
    sent = []

    def flush_then_prompt():  # a prompt arriving from another thread after the first chunk
        original_flush()
        if not sent:
            mask = np.zeros((1, 64, 64), bool)
            mask[0, 10:20, 10:20] = True
            sent.append(ingest.prompt(records.PromptRecord("cam", None, [1], mask)))

    ingest._flush = flush_then_prompt
    report = ingest.run(last=last)
    assert report.frames == report.produced == 56 and report.state == "ended"
    assert sent[0].frame_idx == 48  # the first frame after the chunk 40-47
    got = [r for r in read_all(broker, cfg) if r.stream_id == "cam"][2:]
    kinds = [type(r).__name__ for r in got]
    assert kinds == ["FrameChunk", "PromptRecord", "FrameChunk", "ControlRecord"]
    assert got[0].first == 40 and got[2].first == 48 and got[3].frame_idx == 56
    with pytest.raises(ConflictError, match="ended"):
        ingest.prompt(records.PromptRecord("cam", None, [2], sent[0].masks))


def test_an_ingest_started_before_the_brokers_waits_for_them_and_loses_nothing(tmp_path):
    """The brokers are away when the ingest job starts (a camera box booted before Kafka):
    it reports them as a drop, tries again with the reconnect back-off and, once they
    answer, produces the whole file once."""
    import threading
    import time

    from ausm_stream.pipeline.broker import EmbeddedBroker, free_port
    from ausm_stream.pipeline.ingest import IngestJob

    video = generate_video("test", 2, ShapesSpec(size=(64, 64), frames=16))
    path = write_h264(tmp_path / "v.mp4", video.frames, fps=8)
    broker = EmbeddedBroker(port=free_port())
    cfg = KafkaConfig(bootstrap=broker.bootstrap, frames_topic="frames-late", partitions=1)
    retries = IngestConfig(chunk_frames=4, reconnect_initial_s=0.2, reconnect_max_s=0.5)
    job = IngestJob("cam-late", str(path), (64, 64), cfg, broker.bootstrap, retries)
    reports = []
    runner = threading.Thread(target=lambda: reports.append(job.run()))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not job.report().drops and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not reports and job.report().state == "reconnecting"
        assert "Kafka" in job.report().drops[0]
        broker.start()
        kafka.ensure_topics(cfg, broker.bootstrap)
        runner.join(90)
        assert reports and (reports[0].state, reports[0].frames) == ("ended", 16)
        got = read_all(broker, cfg)
    finally:
        job.stop()
        runner.join(10)
        broker.stop()
    assert any("Kafka" in d for d in reports[0].drops), reports[0].drops
    idx = np.concatenate([r.frame_idx for r in got if isinstance(r, records.FrameChunk)])
    assert idx.tolist() == list(range(16))  # every frame once
    assert got[-1] == records.ControlRecord("end", "cam-late", 16)
