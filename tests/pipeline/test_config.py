"""Pipeline configuration: YAML, environment overrides, errors that name the key."""

from __future__ import annotations

import pytest

from ausm_stream.errors import ConfigError
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


REMOTE = {"bootstrap": "kafka-0.example:9093"}


@pytest.mark.parametrize(
    "kafka, message",
    [
        ({"security_protocol": "SASL_SSL"}, "PLAINTEXT with the embedded broker"),
        ({**REMOTE, "security_protocol": "SASL_SSL"}, "needs kafka.sasl_mechanism"),
        ({**REMOTE, "sasl_username": "u"}, "sasl_\\* settings need"),
        ({**REMOTE, "security_protocol": "TLS"}, "kafka.security_protocol must be one of"),
        ({**REMOTE, "ssl_cafile": "/etc/hostname"}, "ssl_cafile needs kafka.security_protocol"),
        ({**REMOTE, "security_protocol": "SSL", "ssl_cafile": "/no/ca.pem"}, "is not a file"),
        (
            {**REMOTE, "security_protocol": "SSL", "ssl_certfile": "/etc/hostname"},
            "go together",
        ),
    ],
)
def test_kafka_security_settings_are_checked(kafka, message):
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.from_dict({"kafka": kafka})


def test_kafka_security_settings_reach_every_client(tmp_path):
    """TLS and SASL settings become kafka-python's arguments, the password from the
    environment and never in the config's repr. (Tansu 0.6.0, the embedded broker, cannot
    serve an end-to-end test: its ``--cert`` and ``--key`` options exclude each other, and
    with ``--authentication`` and memory storage no user can be created.)"""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = PipelineConfig.load(
        env={
            "AUSM_KAFKA__BOOTSTRAP": REMOTE["bootstrap"],
            "AUSM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "AUSM_KAFKA__SSL_CAFILE": str(ca),
            "AUSM_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "AUSM_KAFKA__SASL_USERNAME": "ausm",
            "AUSM_KAFKA__SASL_PASSWORD": "hunter2-secret",
        }
    )
    assert cfg.kafka.client_settings() == {
        "security_protocol": "SASL_SSL",
        "ssl_cafile": str(ca),
        "ssl_certfile": None,
        "ssl_keyfile": None,
        "ssl_check_hostname": True,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ausm",
        "sasl_plain_password": "hunter2-secret",
    }
    assert "hunter2" not in repr(cfg)
    assert PipelineConfig().kafka.client_settings() == {"security_protocol": "PLAINTEXT"}


def test_topics_settings_and_delivery_timeout_are_checked():
    from ausm_stream.pipeline.kafka import topic_settings

    cfg = PipelineConfig.from_dict(
        {"kafka": {"replication_factor": 3, "topic_configs": {"retention.ms": 3600000}}}
    )
    assert cfg.kafka.replication_factor == 3
    assert topic_settings(cfg.kafka) == {
        "max.message.bytes": str(16 * 1024 * 1024),
        "retention.ms": "3600000",
    }
    with pytest.raises(ConfigError, match=r"kafka\.replication_factor must be at least 1"):
        PipelineConfig.from_dict({"kafka": {"replication_factor": 0}})
    with pytest.raises(ConfigError, match=r"kafka\.topic_configs must be a mapping"):
        PipelineConfig.from_dict({"kafka": {"topic_configs": "retention.ms=1"}})
    with pytest.raises(ConfigError, match=r"kafka\.delivery_timeout_s must be at least 31"):
        PipelineConfig.from_dict({"kafka": {"delivery_timeout_s": 5}})
    with pytest.raises(ConfigError, match=r"kafka\.embedded_log must be one of"):
        PipelineConfig.from_dict({"kafka": {"embedded_log": "disk"}})
