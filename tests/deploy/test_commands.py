"""``ausm-stream ingest`` and ``ausm-stream run`` against services named by configuration."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from ausm_stream.deploy.cli import main
from ausm_stream.deploy.run import parse_sources, run_pipeline
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import KafkaConfig, PipelineConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store
from ausm_stream.pipeline.video_files import write_h264
from tests.conftest import s3_storage


def ingest_cli(cfg_file, stream_id: str, source: str, size: str) -> int:
    return main(
        [
            "ingest",
            "--config",
            str(cfg_file),
            "--stream-id",
            stream_id,
            "--source",
            source,
            "--size",
            size,
        ]
    )


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    spec = ShapesSpec(size=(96, 128), frames=20)
    return write_h264(tmp_path_factory.mktemp("v") / "v.mp4", generate_video("val", 3, spec).frames)


def one_partition_topic(broker, tmp_path, topic: str):
    """A pipeline YAML naming ``topic`` (one partition, created) and the topic's records
    once read: (key, kind) each."""
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(
        f"kafka:\n  bootstrap: {broker.bootstrap}\n  frames_topic: {topic}\n  partitions: 1\n"
    )
    cfg = KafkaConfig(bootstrap=broker.bootstrap, frames_topic=topic, partitions=1)
    kafka.ensure_topics(cfg, broker.bootstrap)

    def read() -> list[tuple[str, str]]:
        consumer = kafka.make_consumer(cfg, broker.bootstrap)
        kafka.assign(consumer, topic, [0])
        return [
            (m.key.decode(), kafka.header(m.headers, records.KIND_HEADER))
            for msgs in consumer.poll(timeout_ms=3000).values()
            for m in msgs
        ]

    return cfg_file, read


def test_ingest_command(broker, video, tmp_path, capsys):
    cfg_file, read = one_partition_topic(broker, tmp_path, "cli-frames")
    assert ingest_cli(cfg_file, "door", str(video), "64x64") == 0
    assert "door: 20 frames in 3 chunks, 0 reconnects" in capsys.readouterr().out
    assert [kind for _, kind in read()] == ["frames"] * 3 + ["end"]


def test_ingest_command_takes_many_sources_in_one_process(broker, video, tmp_path, capsys):
    cfg_file, read = one_partition_topic(broker, tmp_path, "cli-many")
    argv = ["ingest", "--config", str(cfg_file), "--size", "64x64"]
    argv += ["--source", f"door={video}", "--source", f"gate={video}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "door: 20 frames in 3 chunks" in out and "gate: 20 frames in 3 chunks" in out
    assert sorted(key for key, kind in read() if kind == "end") == ["door", "gate"]
    assert main(["ingest", "--stream-id", "x", "--source", "a.mp4", "--source", "b.mp4"]) == 2
    assert "--stream-id names one stream" in capsys.readouterr().err


def test_ingest_command_errors(tmp_path, capsys):
    assert main(["ingest", "--stream-id", "x", "--source", "a.mp4"]) == 2
    assert "not 'embedded'" in capsys.readouterr().err
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("kafka:\n  bootstrap: 127.0.0.1:1\n")
    assert ingest_cli(cfg_file, "x", "a.mp4", "big") == 2
    assert "--size 'big'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="STREAM_ID=URL"):
        parse_sources(["no-equals-sign"])


@pytest.mark.slow
def test_run_against_configured_services(broker, s3_endpoint, video, tmp_path):
    """Kafka, S3 and Ray as a deployment names them (here: loopback stand-ins, local Ray)."""
    from ausm_stream.model import AUSM, AUSMConfig

    weights = tmp_path / "w.safetensors"
    AUSM(AUSMConfig.preset("tiny", fg_threshold=0.8)).save_weights(weights)
    storage = s3_storage(s3_endpoint, "run-test")
    cfg = PipelineConfig.from_dict(
        {
            "kafka": {
                "bootstrap": broker.bootstrap,
                "frames_topic": "run-frames",
                "tracks_topic": "run-tracks",
                "dead_letter_topic": "run-dlq",
                "partitions": 2,
            },
            "storage": {
                "url": storage.url,
                "endpoint": storage.endpoint,
                "access_key": storage.access_key,
                "secret_key": storage.secret_key,
            },
            "model": {"weights": str(weights)},
        }
    )
    summary = run_pipeline(cfg, {"lobby": str(video)}, idle_timeout_s=8)
    assert summary.streams["lobby"].frames_out == 20 and summary.streams["lobby"].ended
    frames = read_dataset(open_store(cfg.storage), "frames")
    lobby = frames.filter(pc.field("stream_id") == "lobby")["frame_idx"].to_pylist()
    assert sorted(lobby) == list(range(20))
