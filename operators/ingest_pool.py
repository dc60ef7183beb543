"""Ingest processes that serve many streams each, and the placement of streams on them.

A stream's ingest (:class:`~ausm_stream.pipeline.ingest.IngestJob`: decode, resize, chunk,
produce, reconnect, pace, resume) is mostly waiting: on the camera, on the decoder (PyAV
decodes outside Python's lock), on the broker. A process per stream spent ~220 MB on each
(a thousand cameras, ~220 GB for decoding alone); here one :class:`IngestProcess`, a Ray
actor, runs up to ``ingest.streams_per_process`` streams, each stream's ``run`` in a thread
of its own, and reserves ``ingest.cpus_per_process`` CPUs so Ray places it where there is
room. Each stream keeps everything it had as a process of its own: its reconnect back-off,
pacing and report, and its resume after the last frame in the topic.

After a crash Ray restarts the process and retries each stream's ``run`` (``run`` carries
its stream's settings), and each resumes after its last frame produced, as before. A
process serves streams of one pipeline (one frames topic); :class:`IngestPlacement` fills the
processes in order, starts one when all are full and ends one when its last stream leaves.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field

import ray

from ausm_stream.errors import ConflictError, NotFoundError
from ausm_stream.pipeline import records
from ausm_stream.pipeline.config import IngestConfig, KafkaConfig, PipelineConfig
from ausm_stream.pipeline.ingest import IngestJob, IngestReport

START_WAIT_S = 30.0
"""How long a prompt waits for its stream's run to begin in a process just placed."""
CONTROL_THREADS = 4
"""Threads of an ingest process beyond its streams' runs: stop, prompt and report stay
answerable however many streams run."""


class IngestProcess:
    """Up to ``capacity`` streams' ingests in one process, each in the thread of its
    ``run`` call (a Ray actor with that many threads and :data:`CONTROL_THREADS` more)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._jobs: dict[str, IngestJob] = {}
        self._stopped: set[str] = set()
        self._lock = threading.Condition()

    def run(
        self,
        stream_id: str,
        url: str,
        size: tuple[int, int],
        kafka_cfg: KafkaConfig,
        bootstrap: str,
        cfg: IngestConfig,
        first_frame: int = 0,
        max_frames: int | None = None,
    ) -> IngestReport:
        """Ingest one stream until its source ends or :meth:`stop`; its report."""
        job = IngestJob(stream_id, url, size, kafka_cfg, bootstrap, cfg, first_frame=first_frame)
        with self._lock:
            if stream_id in self._jobs:
                raise ConflictError(f"stream {stream_id!r} is ingested here already")
            if len(self._jobs) >= self.capacity:
                raise ConflictError(
                    f"ingest process full ({self.capacity} streams: ingest.streams_per_process)"
                )
            if stream_id in self._stopped:  # stopped before its run began
                self._stopped.discard(stream_id)
                job.stop()
            self._jobs[stream_id] = job
            self._lock.notify_all()
        try:
            return job.run(max_frames)
        finally:
            with self._lock:
                self._jobs.pop(stream_id, None)

    def stop(self, stream_id: str) -> None:
        """Stop a stream's ingest (its run returns after flushing); one whose run has not
        begun yet returns as soon as it begins."""
        with self._lock:
            job = self._jobs.get(stream_id)
            if job is None:
                self._stopped.add(stream_id)
                return
        job.stop()

    def prompt(self, stream_id: str, prompt: records.PromptRecord) -> records.PromptRecord:
        """Send a prompt between the stream's chunks (waiting for its run to begin, as a
        stream just placed here may not have yet)."""
        return self._job(stream_id, wait_s=START_WAIT_S).prompt(prompt)

    def report(self, stream_id: str) -> IngestReport:
        """The stream's report now; ``starting`` before its run began."""
        with self._lock:
            job = self._jobs.get(stream_id)
        return IngestReport(stream_id) if job is None else job.report()

    def streams(self) -> list[str]:
        with self._lock:
            return sorted(self._jobs)

    def pid(self) -> int:
        """The process id (for operators and failover tests)."""
        return os.getpid()

    def _job(self, stream_id: str, wait_s: float) -> IngestJob:
        with self._lock:
            self._lock.wait_for(lambda: stream_id in self._jobs, timeout=wait_s)
            job = self._jobs.get(stream_id)
        if job is None:
            raise NotFoundError(f"stream {stream_id!r} is not ingested by this process")
        return job


def ingest_process(cfg: IngestConfig) -> ray.actor.ActorClass:
    """:class:`IngestProcess` as a Ray actor class for ``cfg``'s capacity and CPUs. Ray
    restarts it after a crash and retries its streams' runs, which resume."""
    return ray.remote(
        num_cpus=cfg.cpus_per_process,
        max_concurrency=cfg.streams_per_process + CONTROL_THREADS,
        max_restarts=-1,
        max_task_retries=-1,
    )(IngestProcess)


@dataclass
class Ingesting:
    """One stream's ingest: the process it runs in and its running ``run``."""

    stream_id: str
    process: ray.actor.ActorHandle
    run: ray.ObjectRef

    def stop(self) -> ray.ObjectRef:
        return self.process.stop.remote(self.stream_id)

    def prompt(self, prompt: records.PromptRecord) -> ray.ObjectRef:
        return self.process.prompt.remote(self.stream_id, prompt)

    def report(self) -> ray.ObjectRef:
        return self.process.report.remote(self.stream_id)


@dataclass
class _Process:
    name: str
    handle: ray.actor.ActorHandle
    streams: set[str] = field(default_factory=set)


class IngestPlacement:
    """Places streams' ingests on :class:`IngestProcess` actors named
    ``ausm-ingest:<frames topic>:<n>``: the first process with room takes a new stream, a
    new process starts when all are full, and one whose last stream left ends. Thread-safe
    (the stream manager's API calls run in threads)."""

    def __init__(self, cfg: PipelineConfig, bootstrap: str, size: tuple[int, int]) -> None:
        self.cfg, self.bootstrap, self.size = cfg, bootstrap, size
        self.prefix = f"ausm-ingest:{cfg.kafka.frames_topic}:"
        self._actor = ingest_process(cfg.ingest)
        self._processes: list[_Process] = []
        self._made = 0
        self._lock = threading.Lock()

    def _end_leftovers(self) -> None:
        """End ingest processes of this topic left by a predecessor (a stream manager that
        died): they must not produce beside the new ones. Before the first start, so that a
        placement that starts nothing asks nothing of Ray."""
        for name in ray.util.list_named_actors():
            if name.startswith(self.prefix):
                with contextlib.suppress(ValueError):
                    ray.kill(ray.get_actor(name), no_restart=True)

    def start(
        self, stream_id: str, source: str, cfg: IngestConfig | None = None, first_frame: int = 0
    ) -> Ingesting:
        """Start ``stream_id``'s ingest of ``source`` (``cfg``: the pipeline's ingest
        settings, or a stream's own frame rate over them) on a process with room."""
        with self._lock:
            if self._made == 0:
                self._end_leftovers()
            process = next(
                (
                    p
                    for p in self._processes
                    if len(p.streams) < self.cfg.ingest.streams_per_process
                ),
                None,
            )
            if process is None:
                name = f"{self.prefix}{self._made}"
                self._made += 1
                handle = self._actor.options(name=name).remote(self.cfg.ingest.streams_per_process)
                process = _Process(name, handle)
                self._processes.append(process)
            process.streams.add(stream_id)
        run = process.handle.run.remote(
            stream_id,
            source,
            self.size,
            self.cfg.kafka,
            self.bootstrap,
            cfg or self.cfg.ingest,
            first_frame=first_frame,
        )
        return Ingesting(stream_id, process.handle, run)

    def release(self, stream_id: str) -> None:
        """The stream's ingest returned or was stopped: its place is free, and a process
        left with no stream ends."""
        with self._lock:
            for process in self._processes:
                if stream_id in process.streams:
                    process.streams.discard(stream_id)
                    if not process.streams:
                        self._processes.remove(process)
                        ray.kill(process.handle, no_restart=True)
                    return

    def processes(self) -> dict[str, list[str]]:
        """Each ingest process's name and the streams placed on it."""
        with self._lock:
            return {p.name: sorted(p.streams) for p in self._processes}
