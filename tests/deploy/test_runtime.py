"""The runtime's embedded broker: where its log lives (``kafka.embedded_log``)."""

from __future__ import annotations

import pytest

from ausm_stream.deploy.runtime import embedded_broker
from ausm_stream.errors import ConfigError
from ausm_stream.pipeline.config import PipelineConfig


def test_a_broker_log_kept_in_the_store_needs_an_s3_store():
    cfg = PipelineConfig.from_dict(
        {"kafka": {"embedded_log": "store"}, "storage": {"url": "file:///tmp/x"}}
    )
    with pytest.raises(ConfigError, match="s3://"):
        embedded_broker(cfg, None)
    s3 = PipelineConfig.from_dict(
        {
            "kafka": {"embedded_log": "store"},
            "storage": {"url": "s3://seg/prod", "endpoint": "http://127.0.0.1:9", "region": "eu"},
        }
    )
    broker = embedded_broker(s3, None)  # not started
    assert broker.storage == "s3://seg/"
    assert broker.env["AWS_ENDPOINT"] == "http://127.0.0.1:9"
    assert broker.env["AWS_ALLOW_HTTP"] == "true" and broker.env["AWS_DEFAULT_REGION"] == "eu"
