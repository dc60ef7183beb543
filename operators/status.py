"""What a worker and a pool report: typed status records, ready to serve and to log.

A worker keeps a :class:`StreamStats` per stream and the :class:`Preview` of the streams it
stepped last; it builds a :class:`WorkerStatus` on request (``SegmentationWorker.status``); the
coordinator merges its workers' into a :class:`PoolStatus`. Both are plain frozen
dataclasses of numbers and strings, so they cross Ray unchanged and :meth:`to_dict` gives
the JSON that ``ausm-stream run`` prints and an API serves.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

Residence = Literal["resident", "host", "stored", "ended"]
"""Where a stream's state is: live on the worker's device, compressed in its host memory, in
the object store only (paged out, back at its next record), or nowhere (the stream ended;
its last checkpoint stays)."""


def rss_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def peak_rss_bytes() -> int:
    """This process's highest resident memory so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


@dataclass(frozen=True)
class Preview:
    """A stream's latest segmented frame with its track rows, for the control plane's
    preview image."""

    stream_id: str
    frame_idx: int
    image: np.ndarray
    """(h, w, 3) uint8 at the model's resolution."""
    rows: pa.RecordBatch
    """The frame's track records (``TRACKS_SCHEMA``; boxes in source pixels)."""


@dataclass
class StreamStats:
    """A worker's running counts of one stream, kept while the worker owns its partition
    (the source of :class:`StreamStatus`)."""

    frames: int = 0
    """Frames segmented."""
    skipped: int = 0
    """Frames skipped to catch up (``worker.lag_policy: skip_to_live``)."""
    tracks: int = 0
    """Tracks the stream has shown (its highest track id)."""
    gaps: int = 0
    """Runs of frames that never arrived, as of when the stream left memory."""
    first_step: float | None = None
    last_step: float | None = None
    ended: bool = False
    resumed_at: int | None = None
    """The frame the stream resumed at, when this worker restored it from a checkpoint."""
    active_tracks: int = 0
    """Tracks shown in its latest segmented frame."""
    last_checkpoint: int | None = None
    """The frame its newest stored checkpoint resumes at."""

    @property
    def fps(self) -> float:
        if self.first_step is None or self.last_step is None or self.frames < 2:
            return 0.0
        return (self.frames - 1) / max(self.last_step - self.first_step, 1e-9)


STEP_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Bounds of the step latency histogram (seconds per batched model step)."""


def batch_buckets(max_batch: int) -> tuple[float, ...]:
    """Powers of two up to ``max_batch`` (and it): the batch size histogram's bounds."""
    bounds = {float(2**i) for i in range(max_batch.bit_length()) if 2**i <= max_batch}
    return tuple(sorted(bounds | {float(max_batch)}))


@dataclass
class Histogram:
    """Counts of observations per bucket (``counts[i]``: at most ``bounds[i]`` and above the
    bound before; the last: above every bound), as Prometheus histograms count them."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        i = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[i] += 1
        self.total += value
        self.count += 1

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total, self.count)


@dataclass(frozen=True)
class StreamStatus:
    stream_id: str
    worker: str | None
    frames_in: int
    """Frames received: segmented, skipped and still queued."""
    frames_out: int
    """Frames segmented (their tracks written)."""
    skipped: int
    """Frames skipped to catch up (``worker.lag_policy: skip_to_live``)."""
    lag_frames: int
    """Frames the worker received and has not segmented yet."""
    lag_s: float
    """Capture time from the next frame to segment to the newest one received. Frames still
    in Kafka (not fetched yet) count in the worker's ``partition_lag`` instead."""
    fps: float
    """Frames segmented per second of wall time, first to last."""
    residence: Residence
    active_tracks: int
    """Tracks shown in the stream's latest segmented frame."""
    tracks: int
    """Tracks the stream has shown in all (its highest track id)."""
    gaps: int
    """Runs of frames that never arrived."""
    ended: bool
    last_checkpoint_frame: int | None
    """The frame the stream's newest stored checkpoint resumes at."""
    resumed_at: int | None
    """The frame this worker restored the stream at from a checkpoint, if it did."""


@dataclass(frozen=True)
class WorkerStatus:
    name: str | None
    model_version: str
    partitions: list[int]
    partition_lag: dict[int, int]
    """Per partition, records in Kafka the worker has not read yet: what waits there under
    back-pressure (``worker.max_queued_bytes``), unseen by the streams' own lag."""
    dead_letters: int
    checkpoints_written: int
    recovered_streams: int
    resident_streams: int
    host_streams: int
    """Streams whose state is paged out to host memory (``worker.resident_streams``)."""
    stored_streams: int
    """Streams paged out to the object store (host budget or ``worker.idle_page_out_s``)."""
    host_state_bytes: int
    """Compressed bytes of the states in host memory."""
    page_outs: int
    page_ins: int
    """States paged in from host memory, and (``store_page_ins``) from the object store."""
    store_page_ins: int
    store_errors: int
    """Object-store calls that failed (retried with back-off: ``storage.retry_*``)."""
    store_outage_s: float
    """Seconds the store has been failing now (since its last answer); 0 while it answers."""
    broker_errors: int
    """Tracks windows the Kafka brokers failed to take or acknowledge (sent again later)."""
    broker_outage_s: float
    """Seconds the brokers have been failing the worker's sends now; 0 while they answer."""
    run_seconds: float
    """Wall time of the finished runs."""
    step_seconds: float
    """Time in the model's step: the model's share of ``run_seconds``."""
    cpu_seconds: float
    """CPU time of the whole worker process over its finished runs."""
    rss_bytes: int
    """The worker process's resident memory now (0 where ``/proc`` is missing)."""
    peak_rss_bytes: int
    """Its highest resident memory so far."""
    step_latency: Histogram = field(default_factory=lambda: Histogram(STEP_SECONDS_BUCKETS))
    """Seconds per batched model step."""
    batch_size: Histogram = field(default_factory=lambda: Histogram(batch_buckets(1)))
    """Streams per batched model step."""
    streams: dict[str, StreamStatus] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PoolStatus:
    model_version: str
    dead_letters: int
    checkpoints_written: int
    recovered_streams: int
    workers: list[WorkerStatus]
    """Each worker's status, without its streams (they are in ``streams``), by name."""
    streams: dict[str, StreamStatus]
    """Every stream of every worker (a stream is on one worker)."""

    @classmethod
    def merge(cls, workers: list[WorkerStatus]) -> PoolStatus:
        return cls(
            model_version=workers[0].model_version if workers else "",
            dead_letters=sum(w.dead_letters for w in workers),
            checkpoints_written=sum(w.checkpoints_written for w in workers),
            recovered_streams=sum(w.recovered_streams for w in workers),
            workers=[  # in name order (worker-2 before worker-10), whoever finished first
                dataclasses.replace(w, streams={})
                for w in sorted(workers, key=lambda w: (len(w.name or ""), w.name or ""))
            ],
            streams=dict(sorted(kv for w in workers for kv in w.streams.items())),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
