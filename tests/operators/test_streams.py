"""The stream manager's health check (real broker and store, in-process): its cost does not
grow with the streams registered, and it says only what broke."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import ray

from ausm_stream.operators.streams import StreamManager
from ausm_stream.pipeline import kafka
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.registry import StreamRegistry, new_stream
from ausm_stream.pipeline.storage import FileStore, open_store


@pytest.fixture
def counted(monkeypatch) -> Counter:
    """Calls into the object store (the real ones still run)."""
    calls: Counter = Counter()
    for name in ("get", "list", "put", "delete"):
        real = getattr(FileStore, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(FileStore, name, spy)
    return calls


def test_health_costs_the_same_store_calls_however_many_streams(broker, tmp_path, counted):
    topic = uuid.uuid4().hex[:8]
    cfg = PipelineConfig.from_dict(
        {
            "kafka": {"bootstrap": broker.bootstrap, "frames_topic": f"frames-{topic}"},
            "storage": {"url": f"file://{tmp_path}/store"},
        }
    )
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    registry = StreamRegistry(open_store(cfg.storage))
    manager = StreamManager(cfg, broker.bootstrap)
    try:
        costs = []
        for streams in (0, 50):
            for i in range(streams):
                registry.put(new_stream(f"cam-{i}", "external", None))
            counted.clear()
            assert manager.health() == {"broker": "ok", "store": "ok"}
            costs.append(sum(counted.values()))
        assert costs[0] == costs[1] <= 1, costs
        # With no stream of its own to ingest it asked nothing of Ray (which would have
        # started a local Ray in this process).
        assert not ray.is_initialized()
    finally:
        manager.stop()
