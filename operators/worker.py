"""The SegmentationWorker: owns a model, consumes its partitions, writes tracks.

It reads its partitions of the frames topic by explicit assignment (never a consumer
group: partitions are handed out by the caller, later by the coordinator), validates every
record, sends invalid ones to the dead-letter topic with the reason and goes on, and steps
all ready streams as one batch through :class:`StreamProcessor`. Tracks go to the tracks
topic and the Parquet dataset.

Slow work happens between polls, never inside a Kafka callback: the model step on the
polling thread (its lanes on their own threads), then the sinks (Arrow encoding, Parquet,
the tracks topic) for the frames it emitted, in order. The sinks run inline on purpose: on a
writer thread their Python competes for the GIL with the lanes' op dispatch, and
`bench/pipeline.py` found the thread no faster (0.785 of the bare model against 0.80 inline,
medians of 8 and 13 rounds; the sinks cost ~0.3 ms a frame). The class is plain Python;
:data:`SegmentationWorkerActor` is its Ray actor.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch
from kafka.consumer.fetcher import ConsumerRecord

from ausm_stream.errors import ConfigError, RecordError
from ausm_stream.model import AUSM, DEFAULT_WEIGHTS, AUSMConfig
from ausm_stream.operators.processor import StreamProcessor
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.records import FrameTracks
from ausm_stream.pipeline.sinks import KafkaTrackSink, ParquetSink
from ausm_stream.pipeline.storage import open_store

log = logging.getLogger(__name__)

ERROR_HEADER = "ausm-error"
SOURCE_HEADER = "ausm-source"


def _resolve(weights: str) -> tuple[Path, str]:
    """The weights file and its version string (file stem @ sha256 prefix)."""
    path = DEFAULT_WEIGHTS if weights == "default" else Path(weights)
    if not path.is_file():
        raise ConfigError(f"model.weights: {str(path)!r} does not exist")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return path, f"{path.stem}@{digest}"


def load_model(weights: str, **runtime: object) -> tuple[AUSM, str]:
    """The model and its version string; ``runtime`` overrides runtime config fields."""
    path, version = _resolve(weights)
    return AUSM.from_weights(path, **runtime), version


def weights_info(weights: str) -> tuple[AUSMConfig, str]:
    """The config and version of a weights file, without building the model: what drivers
    that only start workers and ingest (input size, version) need."""
    path, version = _resolve(weights)
    return AUSM.read_config(path), version


@dataclass
class StreamStats:
    frames: int = 0
    tracks: set[int] = field(default_factory=set)
    first_step: float | None = None
    last_step: float | None = None
    ended: bool = False

    @property
    def fps(self) -> float:
        if self.first_step is None or self.last_step is None or self.frames < 2:
            return 0.0
        return (self.frames - 1) / max(self.last_step - self.first_step, 1e-9)


class SegmentationWorker:
    def __init__(self, cfg: PipelineConfig, bootstrap: str, partitions: list[int]) -> None:
        self.cfg = cfg
        self.bootstrap = bootstrap
        self.partitions = list(partitions)
        # One torch thread per lane, one lane per reserved core: streams run side by side, and
        # outputs do not depend on how many cores a worker has (replays elsewhere match).
        torch.set_num_threads(1)
        self.model, self.model_version = load_model(cfg.model.weights, step_lanes=cfg.worker.cpus)
        self.model.warm_up(streams=cfg.worker.cpus)  # ready before the first frame arrives
        self.store = open_store(cfg.storage)
        self.producer = kafka.make_producer(cfg.kafka, bootstrap)
        self.parquet = ParquetSink(self.store, self.model_version, cfg.worker.parquet_frames)
        self.track_topic = KafkaTrackSink(
            self.producer, cfg.kafka.tracks_topic, cfg.ingest.chunk_frames
        )
        self.processor = StreamProcessor(
            self.model,
            self._write,
            seed=cfg.model.seed,
            max_batch=cfg.worker.max_batch,
            on_end=self._end_stream,
        )
        self.stats: dict[str, StreamStats] = defaultdict(StreamStats)
        self.dead_letters = 0
        self.run_seconds = 0.0
        self.cpu_seconds = 0.0
        self._stop = threading.Event()

    # -- sinks (in emit order) ----------------------------------------------------------------
    def _write(self, frame: FrameTracks) -> None:
        rows = records.tracks_batch([frame], self.model_version)  # encoded once, for both
        self.parquet.add(frame, rows)
        self.track_topic.add(frame, rows)
        st = self.stats[frame.stream_id]
        now = time.monotonic()
        st.first_step = st.first_step or now
        st.last_step = now
        st.frames += 1
        st.tracks.update(int(t) for t in frame.track_ids)

    def _end_stream(self, stream_id: str) -> None:
        self.parquet.flush(stream_id)
        self.track_topic.flush(stream_id)
        st = self.stats[stream_id]
        st.ended = True
        log.info("stream %s ended after %d frames", stream_id, st.frames)

    def _dead_letter(self, msg: ConsumerRecord, reason: str) -> None:
        self.dead_letters += 1
        kind = kafka.header(msg.headers, records.KIND_HEADER) or "unknown"
        key = msg.key.decode(errors="replace") if msg.key else ""
        log.warning(
            "dead-lettered %s record of %r (%s/%d@%d): %s",
            kind,
            key,
            msg.topic,
            msg.partition,
            msg.offset,
            reason,
        )
        kafka.send(
            self.producer,
            self.cfg.kafka.dead_letter_topic,
            key,
            msg.value or b"",
            kind,
            extra_headers=[
                (ERROR_HEADER, reason.encode()),
                (SOURCE_HEADER, f"{msg.topic}/{msg.partition}/{msg.offset}".encode()),
            ],
        )

    # -- the loop ----------------------------------------------------------------------------
    def handle(self, msg: ConsumerRecord) -> None:
        """Decode, validate and queue one message; invalid ones go to the dead-letter topic."""
        kind = kafka.header(msg.headers, records.KIND_HEADER)
        key = msg.key.decode(errors="replace") if msg.key else None
        try:
            record = records.decode(kind, msg.value or b"", key, self.model.cfg.image_size)
            self.processor.on_record(record)
        except RecordError as exc:
            self._dead_letter(msg, str(exc))

    def run(
        self,
        until_ended: set[str] | None = None,
        idle_timeout_s: float | None = None,
        max_seconds: float | None = None,
    ) -> dict:
        """Consume and segment until every stream in ``until_ended`` has ended, nothing has
        arrived for ``idle_timeout_s``, ``max_seconds`` passed, or :meth:`stop` is called."""
        consumer = kafka.make_consumer(self.cfg.kafka, self.bootstrap)
        kafka.assign(consumer, self.cfg.kafka.frames_topic, self.partitions)
        started = last_activity = time.monotonic()
        cpu_started = time.process_time()
        try:
            while not self._stop.is_set():
                # One batch per poll: a backlog makes the poll non-blocking, and frames that
                # arrived meanwhile join the next batch instead of waiting for a drained queue.
                backlog = self.processor.backlog()
                polled = consumer.poll(timeout_ms=0 if backlog else self.cfg.worker.poll_ms)
                for msgs in polled.values():
                    for msg in msgs:
                        self.handle(msg)
                stepped = self.processor.step_ready()
                now = time.monotonic()
                if polled or stepped:
                    last_activity = now
                if until_ended is not None and all(self.stats[s].ended for s in until_ended):
                    break
                if idle_timeout_s is not None and now - last_activity > idle_timeout_s:
                    break
                if max_seconds is not None and now - started > max_seconds:
                    break
        finally:
            self.parquet.flush()
            self.track_topic.flush()  # and the producer: dead letters are delivered too
            consumer.close()
            self.run_seconds += time.monotonic() - started
            self.cpu_seconds += time.process_time() - cpu_started
        return self.summary()

    def stop(self) -> None:
        self._stop.set()

    def summary(self) -> dict:
        return {
            "model_version": self.model_version,
            "partitions": self.partitions,
            "dead_letters": self.dead_letters,
            # Utilisation over finished runs: the model's share of wall time, and the cores
            # the whole worker process (model, decoding, sinks, Kafka client) kept busy.
            "run_seconds": round(self.run_seconds, 3),
            "step_seconds": round(self.processor.step_seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "streams": {
                sid: {
                    "frames": st.frames,
                    "tracks": len(st.tracks),
                    "fps": round(st.fps, 2),
                    "ended": st.ended,
                    "gaps": self.processor.streams[sid].gaps
                    if sid in self.processor.streams
                    else 0,
                }
                for sid, st in sorted(self.stats.items())
            },
        }


# Two concurrent calls: ``run`` holds one thread, ``summary``/``stop`` use the other.
SegmentationWorkerActor = ray.remote(max_concurrency=2)(SegmentationWorker)


def start_worker(
    cfg: PipelineConfig, bootstrap: str, partitions: list[int]
) -> ray.actor.ActorHandle:
    """A worker actor reserving ``worker.cpus`` cores, consuming ``partitions``."""
    return SegmentationWorkerActor.options(num_cpus=cfg.worker.cpus).remote(
        cfg, bootstrap, partitions
    )
