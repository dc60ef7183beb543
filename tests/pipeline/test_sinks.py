"""The worker's background writer: order kept, errors surfaced, never lost."""

from __future__ import annotations

import threading

import pytest

from ausm_stream.pipeline.sinks import BackgroundWriter


def test_items_are_written_in_order_and_join_waits_for_them():
    written: list[int] = []
    gate = threading.Event()

    def write(item: int) -> None:
        gate.wait(5)
        written.append(item)

    writer = BackgroundWriter(write, max_queued=4)
    for i in range(3):
        writer.put(i)
    assert written == []  # the producer did not wait for the sink
    gate.set()
    writer.join()
    assert written == [0, 1, 2]


def test_a_failed_write_is_raised_again_and_later_items_are_not_written():
    written: list[int] = []

    def write(item: int) -> None:
        if item == 1:
            raise OSError("disk full")
        written.append(item)

    writer = BackgroundWriter(write)
    writer.put(0)
    writer.put(1)
    with pytest.raises(RuntimeError, match="sink failed: disk full"):
        writer.join()
    with pytest.raises(RuntimeError, match="disk full"):
        writer.put(2)
    assert written == [0]
