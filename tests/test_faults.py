"""The fault suite (``bench/faults.py``), short: one run of 4 cameras over 2 workers takes
poison records of every kind, hostile stream ids, a store outage, a broker outage and a
worker SIGKILL, one after the other, and must lose nothing, duplicate nothing, dead-letter
every poison with its reason, resume within 30 s of each fault's end, and write what a run
without faults writes, byte for byte.

Shorter than the bench's (10 s and 15 s outages instead of 60 s and 90 s; cameras at 2 fps,
so that they outlast the faults with fewer frames to segment) to keep it near 3 minutes.
On a failure the printed report says where lost frames went missing: a chunk that never
reached the frames topic, with no restart of its ingest, is one the embedded broker (Tansu,
its log in S3) acknowledged and did not keep across its restart (it answered a retried batch
DUPLICATE_SEQUENCE_NUMBER, which the producer takes for success), as the 90 s outage of the
bench showed.
"""

from __future__ import annotations

import pytest

from bench.faults import STALL_TARGET_S, FaultSettings, run_faults

SHORT = FaultSettings(
    store_outage_s=10.0,
    broker_outage_s=15.0,
    fps=2,
    parquet_frames=8,  # a window every 4 s of video: stalls seen to within a few seconds
    margin_s=60.0,
    settle_s=1.0,
)


@pytest.mark.slow
def test_one_run_through_every_fault_loses_nothing_and_equals_a_run_without_faults(
    ray_session,
):
    report = run_faults(SHORT)
    print(report)
    assert report.frames_lost == 0
    assert report.rows_duplicated == {"Parquet frames": 0, "Parquet tracks": 0, "tracks topic": 0}
    # Every kind was sent, and every record of it dead-lettered with its own reason.
    assert len(report.poisons_sent) == 14 and report.poisons_sent["hostile id as key"] == 7
    assert report.dead_letters == report.poisons_sent
    assert report.unexpected_dead_letters == []
    assert set(report.stalls) == {"store outage", "broker outage", "worker SIGKILL"}
    for fault, stall in report.stalls.items():
        assert stall is not None and stall < STALL_TARGET_S, (fault, stall)
    assert report.recovered_streams >= 1  # the SIGKILL hit streams in flight
    assert report.stray_keys == []  # no hostile id named a path
    assert report.equal
    assert report.problems() == []
