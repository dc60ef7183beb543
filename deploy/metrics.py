"""``GET /metrics``: the pipeline in Prometheus' text format, built at each scrape from the
workers' status and the ingests' reports (counters therefore come from the workers, and
every API replica serves the same numbers)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ausm_stream.operators.status import Histogram, PoolStatus
from ausm_stream.operators.streams import StreamInfo


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    """Cumulative counts per upper bound, ending with ``+Inf``."""
    out, running = [], 0
    for bound, n in zip([*map(str, h.bounds), "+Inf"], h.counts, strict=True):
        running += n
        out.append((bound, running))
    return out


class PipelineCollector:
    def __init__(self, status: PoolStatus, streams: list[StreamInfo]) -> None:
        self.status = status
        self.streams = streams

    def collect(self) -> Iterator[Metric]:
        st = self.status
        per_stream = {
            "frames_in": CounterMetricFamily(
                "ausm_frames_in", "Frames a worker received, per stream", labels=["stream"]
            ),
            "frames_out": CounterMetricFamily(
                "ausm_frames_out", "Frames segmented, per stream", labels=["stream"]
            ),
            "lag_frames": GaugeMetricFamily(
                "ausm_lag_frames", "Frames received and not segmented yet", labels=["stream"]
            ),
            "lag_s": GaugeMetricFamily(
                "ausm_lag_seconds",
                "Capture time from the next frame to segment to the newest received",
                labels=["stream"],
            ),
            "active_tracks": GaugeMetricFamily(
                "ausm_active_tracks", "Tracks in the latest segmented frame", labels=["stream"]
            ),
        }
        for sid, s in st.streams.items():
            for name, family in per_stream.items():
                family.add_metric([sid], getattr(s, name))
        yield from per_stream.values()
        ingested = CounterMetricFamily(
            "ausm_ingest_frames",
            "Frames ingest sent to the frames topic, per stream",
            labels=["stream"],
        )
        reconnects = CounterMetricFamily(
            "ausm_ingest_reconnects", "Times a stream's source dropped", labels=["stream"]
        )
        for info in self.streams:
            if info.ingest is not None:
                ingested.add_metric(
                    [info.stream.id], info.ingest.produced - info.stream.first_frame
                )
                reconnects.add_metric([info.stream.id], info.ingest.reconnects)
        yield ingested
        yield reconnects
        step = HistogramMetricFamily(
            "ausm_step_seconds", "Seconds per batched model step", labels=["worker"]
        )
        batch = HistogramMetricFamily(
            "ausm_batch_size", "Streams per batched model step", labels=["worker"]
        )
        checkpoints = CounterMetricFamily(
            "ausm_checkpoints_written", "Stream checkpoints written", labels=["worker"]
        )
        dead = CounterMetricFamily(
            "ausm_dead_letters", "Records sent to the dead-letter topic", labels=["worker"]
        )
        store_errors = CounterMetricFamily(
            "ausm_store_errors",
            "Object-store calls that failed (retried with back-off)",
            labels=["worker"],
        )
        broker_errors = CounterMetricFamily(
            "ausm_broker_errors",
            "Tracks windows the Kafka brokers failed to take or acknowledge (sent again)",
            labels=["worker"],
        )
        partition_lag = GaugeMetricFamily(
            "ausm_partition_lag_records",
            "Records in Kafka a worker has not read yet",
            labels=["worker", "partition"],
        )
        for w in st.workers:
            name = w.name or ""
            step.add_metric([name], _buckets(w.step_latency), w.step_latency.total)
            batch.add_metric([name], _buckets(w.batch_size), w.batch_size.total)
            checkpoints.add_metric([name], w.checkpoints_written)
            dead.add_metric([name], w.dead_letters)
            store_errors.add_metric([name], w.store_errors)
            broker_errors.add_metric([name], w.broker_errors)
            for p, lag in sorted(w.partition_lag.items()):
                partition_lag.add_metric([name, str(p)], lag)
        yield from (step, batch, checkpoints, dead, store_errors, broker_errors, partition_lag)


def render_metrics(status: PoolStatus, streams: list[StreamInfo]) -> tuple[bytes, str]:
    """(body, content type) of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(status, streams))
    return generate_latest(registry), CONTENT_TYPE_LATEST
