"""Pipeline configuration: YAML, environment overrides, errors that name the key."""

from __future__ import annotations

import pytest

from ausm_stream.pipeline.config import PipelineConfig


def test_defaults_are_the_embedded_setup():
    cfg = PipelineConfig.load(env={})
    assert cfg.kafka.bootstrap == "embedded" and cfg.ray.address == "local"
    assert cfg.storage.url.startswith("file://") and cfg.model.weights == "default"


def test_yaml_then_environment(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("kafka:\n  bootstrap: k1:9092\n  partitions: 8\ningest:\n  fps: 5\n")
    cfg = PipelineConfig.load(
        path,
        env={
            "AUSM_KAFKA__PARTITIONS": "12",
            "AUSM_STORAGE__URL": "s3://bucket/p",
            "AUSM_INGEST__FPS": "none",
            "OTHER": "x",
        },
    )
    assert cfg.kafka.bootstrap == "k1:9092" and cfg.kafka.partitions == 12
    assert cfg.storage.url == "s3://bucket/p" and cfg.ingest.fps is None


@pytest.mark.parametrize(
    "data, message",
    [
        ({"kafka": {"bootstrapp": "x"}}, r"kafka\.bootstrapp"),
        ({"kafak": {}}, "unknown config section"),
        ({"kafka": {"partitions": "many"}}, "kafka.partitions must be a non-negative integer"),
        ({"kafka": {"partitions": -1}}, "kafka.partitions"),
        ({"ingest": {"fps": 0}}, "ingest.fps must be positive, got 0"),
        ({"ingest": {"fps": -8}}, "ingest.fps must be a non-negative number"),
        ({"ingest": {"chunk_frames": 257}}, "ingest.chunk_frames must be at most 256, got 257"),
        ({"worker": {"gpus": -1}}, "worker.gpus must be a non-negative number"),
        ({"storage": {"url": ""}}, "storage.url must be a non-empty string"),
        ({"worker": "fast"}, "section 'worker' must be a mapping"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_dict(data)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        PipelineConfig.load(tmp_path / "nope.yaml", env={})


@pytest.mark.parametrize(
    "section, key",
    [
        ("kafka", "partitions"),
        ("kafka", "max_message_bytes"),
        ("ingest", "chunk_frames"),
        ("worker", "parquet_frames"),
        ("worker", "max_batch"),
        ("worker", "cpus"),
        ("worker", "checkpoint_frames"),
        ("worker", "checkpoints_kept"),
        ("api", "max_body_bytes"),
    ],
)
def test_zero_is_an_error_where_it_means_nothing(section, key):
    with pytest.raises(ValueError, match=rf"{section}\.{key} must be at least 1, got 0"):
        PipelineConfig.from_dict({section: {key: 0}})
    # From the environment too, where every value arrives as a string.
    with pytest.raises(ValueError, match=rf"{section}\.{key} must be at least 1"):
        PipelineConfig.load(env={f"AUSM_{section.upper()}__{key.upper()}": "0"})


def test_zero_stays_valid_where_it_has_a_meaning():
    cfg = PipelineConfig.from_dict(
        {"worker": {"count": 0, "gpus": 0}, "ingest": {"reconnect_attempts": 0}}
    )
    assert cfg.worker.count == 0 and cfg.ingest.reconnect_attempts == 0
    assert cfg.worker.gpus == 0  # the documented default, written out
    assert PipelineConfig.load(env={"AUSM_WORKER__GPUS": "0"}).worker.gpus == 0
