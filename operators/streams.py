"""The stream manager: adds, removes and prompts streams while the pipeline runs.

A named Ray actor (:data:`StreamManagerActor`, one per frames topic) that the control plane's
API replicas share. It owns the :class:`~ausm_stream.pipeline.registry.StreamRegistry` and
the ingest of every registered stream whose source it runs, placed on ingest processes of
up to ``ingest.streams_per_process`` streams each (``operators/ingest_pool.py``;
``external`` streams are ingested elsewhere, by ``ausm-stream ingest`` near the camera).
Everything it writes to a stream goes through the frames topic under the stream's key, so
the workers see it in order with the frames:

- **add**: register, then start the ingest. A stream that ended before under the same id (it
  was removed) starts a new life: a ``reset`` record at the frame where it ended, and frame
  numbers that go on from there, so no row of the old life is replaced.
- **remove**: stop the ingest, write the ``end`` record after the last frame produced (the
  worker then writes the stream's last rows and releases its state), unregister.
- **prompt**: write a prompt record at the frame it names or, naming none, the next frame
  ingested; the answer says which. The stream's ingest sends it between its chunks, so it
  is ordered with them at no cost; for an ``external`` stream the manager writes it and
  reads the topic back to place it.

On start (and on a restart by Ray after a crash) it starts the ingest of every registered
stream: a restarted cluster resumes each one after the last frame it produced.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import ray

from ausm_stream.errors import ConflictError, InvalidInputError, NotFoundError
from ausm_stream.model.prompts import prompt_problem
from ausm_stream.model.versions import weights_info
from ausm_stream.operators.calls import brief, result
from ausm_stream.operators.ingest_pool import Ingesting, IngestPlacement
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.geometry import Placement
from ausm_stream.pipeline.ingest import (
    SOURCE_FAILED,
    IngestReport,
    check_prompt_frame,
    newest_record,
    redact_credentials,
)
from ausm_stream.pipeline.registry import (
    MAX_OBJECT_ID,
    RegisteredStream,
    StreamRegistry,
    new_stream,
)
from ausm_stream.pipeline.sources import check_source
from ausm_stream.pipeline.storage import open_store

log = logging.getLogger(__name__)


REAP_EVERY_S = 5.0


@dataclass(frozen=True)
class StreamInfo:
    """What the control plane knows of a stream besides the workers' status."""

    stream: RegisteredStream
    ingest: IngestReport | None
    """Its ingest's report now (``None`` for an ``external`` stream)."""


@dataclass(frozen=True)
class PromptResult:
    stream_id: str
    frame: int
    """The frame the prompt applies at."""
    object_ids: list[int]


def manager_name(cfg: PipelineConfig) -> str:
    return f"ausm-streams:{cfg.kafka.frames_topic}"


def next_frame_after(
    last: records.FrameChunk | records.ControlRecord | None, first_frame: int
) -> int:
    """The index of the frame that follows ``last``, a stream's newest frames, end or reset
    record (:func:`~ausm_stream.pipeline.ingest.newest_record`)."""
    if isinstance(last, records.FrameChunk):
        return int(last.frame_idx[-1]) + 1
    if isinstance(last, records.ControlRecord):
        return last.frame_idx
    return first_frame


class StreamManager:
    def __init__(self, cfg: PipelineConfig, bootstrap: str) -> None:
        self.cfg = cfg
        self.bootstrap = bootstrap
        model_cfg = weights_info(cfg.model.weights)[0]
        self.model_size = model_cfg.image_size
        self.max_objects = model_cfg.n_id
        self.source_policy = cfg.ingest.source_policy()
        self.registry = StreamRegistry(open_store(cfg.storage))
        # A health check asks this producer for metadata: 5 s at most when the broker is gone.
        self.producer = kafka.make_producer(cfg.kafka, bootstrap, max_block_ms=5_000)
        self.reader = kafka.TopicReader(cfg.kafka, bootstrap)
        self.ingest_processes = IngestPlacement(cfg, bootstrap, self.model_size)
        self.ingests: dict[str, Ingesting] = {}
        self.reports: dict[str, IngestReport] = {}
        """The last report of each ingest: served when its process does not answer in time,
        and for good once its run returned."""
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._closed = threading.Event()
        self._reaping = threading.Lock()
        # Started, or restarted by Ray after a crash (its ingest actors died with it): either
        # way every registered stream's ingest starts, resuming after its last frame.
        self.restored = self._restore()
        threading.Thread(target=self._reap, name="ingest-reaper", daemon=True).start()

    # -- lifecycle ---------------------------------------------------------------------------
    def _restore(self) -> list[str]:
        """Start the ingest of every registered stream; their ids."""
        streams = self.registry.all()
        for stream in streams:
            if not stream.external:
                with self._locks[stream.id]:
                    self._start_ingest(stream)
        log.info("registered streams restored: %s", [s.id for s in streams])
        return [s.id for s in streams]

    def restored_streams(self) -> list[str]:
        """The registered streams this manager found when it started."""
        return list(self.restored)

    def _reap(self) -> None:
        """Collect the reports of ingests that returned, every few seconds (freeing their
        places), whether or not anyone asks for their streams."""
        while not self._closed.wait(REAP_EVERY_S):
            for sid in list(self.ingests):
                self._report(sid)

    def stop(self) -> None:
        """Stop every ingest without ending its stream (a restart resumes them)."""
        self._closed.set()
        for sid in list(self.ingests):
            try:
                self._stop_ingest(sid)
            except ray.exceptions.RayError as exc:
                log.warning("ingest of %s did not stop cleanly: %s", sid, exc)
        self.producer.flush()
        self.reader.close()

    def _stop_ingest(self, stream_id: str) -> None:
        """Stop a stream's ingest (if it still runs), wait for its last frames, free its
        place. One that failed, or does not stop in time, is let go all the same (its
        thread ends with its process, which ends when its last stream leaves)."""
        self.reports.pop(stream_id, None)
        ing = self.ingests.get(stream_id)
        if ing is None:
            return
        try:
            done, _ = ray.wait([ing.run], timeout=0)
            if not done:
                ray.get(ing.stop(), timeout=30)
            ray.get(ing.run, timeout=120)  # its producer is flushed when run returns
        except ray.exceptions.RayError as exc:
            log.warning("ingest of %s ended with an error: %s", stream_id, exc)
        finally:
            self.ingest_processes.release(stream_id)
            self.ingests.pop(stream_id, None)

    # -- the API's operations ------------------------------------------------------------------
    def add(self, stream_id: str, source: str, fps: float | None = None) -> StreamInfo:
        with self._locks[stream_id]:
            if self.registry.get(stream_id) is not None:
                raise ConflictError(
                    f"stream {stream_id!r} exists; remove it first (DELETE /streams/{stream_id})"
                )
            stream = new_stream(stream_id, source, fps)
            if not stream.external:
                try:
                    check_source(source, self.source_policy)
                except InvalidInputError as exc:
                    raise InvalidInputError(f"stream {stream_id!r}: {exc}") from None
            last = newest_record(self.cfg.kafka, self.reader, stream_id)
            if isinstance(last, records.ControlRecord):  # it ended (or was reset): a new life
                stream = dataclasses.replace(stream, first_frame=last.frame_idx)
                if last.kind == "end":
                    self._send(records.ControlRecord("reset", stream_id, last.frame_idx))
                log.info("stream %s starts again at frame %d", stream_id, last.frame_idx)
            self.registry.put(stream)
            if not stream.external:
                self._start_ingest(stream)
            return self._info(stream)

    def remove(self, stream_id: str) -> int:
        """End the stream and unregister it; the number of frames it had (in this life: a
        stream added again after removal counts from its ``first_frame``). An ``external``
        stream's ingest is not ours to stop: stop it first."""
        with self._locks[stream_id]:
            stream = self._registered(stream_id)
            self._stop_ingest(stream_id)
            last = newest_record(self.cfg.kafka, self.reader, stream_id)
            frames = next_frame_after(last, stream.first_frame)
            if not (isinstance(last, records.ControlRecord) and last.kind == "end"):
                self._send(records.ControlRecord("end", stream_id, frames))
            self.registry.remove(stream_id)
            log.info("stream %s removed at frame %d", stream_id, frames)
            return frames - stream.first_frame

    def describe(self, stream_id: str) -> StreamInfo:
        return self._info(self._registered(stream_id))

    def list(self) -> list[StreamInfo]:
        return [self._info(s) for s in self.registry.all()]

    def placement(self, stream_id: str) -> Placement:
        """Where the stream's source frames lie on the model input, for prompts in source
        pixels: as its ingest fits them (``ingest.fit``), or, for an external stream, as its
        newest frame chunk says."""
        stream = self._registered(stream_id)
        report = self._report(stream_id)
        if report is not None and report.source_height:
            source = (report.source_height, report.source_width)
            return Placement.fit(source, self.model_size, self.cfg.ingest.fit)
        last = newest_record(self.cfg.kafka, self.reader, stream_id)
        if isinstance(last, records.FrameChunk):
            return last.placement
        raise ConflictError(
            f"stream {stream.id!r} has no frames yet, so its frame size is unknown: prompt it "
            "once its first frames are in"
        )

    def prompt(
        self,
        stream_id: str,
        masks: np.ndarray,
        object_ids: list[int | None],
        frame: int | None = None,
    ) -> PromptResult:
        """Write a prompt of ``masks`` (K, h, w) at the model's size; objects without an id
        get the stream's next free ones."""
        problem = prompt_problem(masks, object_ids, self.model_size, self.max_objects)
        if problem is not None:
            raise InvalidInputError(f"prompt for {stream_id!r}: {problem}")
        with self._locks[stream_id]:
            stream = self._registered(stream_id)
            ids, stream = self._object_ids(stream, object_ids)
            record = records.PromptRecord(stream_id, frame, ids, masks)
            ing = self.ingests.get(stream_id)
            if ing is not None:  # its ingest sends it between its chunks
                sent = result(ing.prompt(record), timeout=30)
                return PromptResult(stream_id, sent.frame_idx, ids)
            return PromptResult(stream_id, self._send_prompt(stream, record), ids)

    def _send_prompt(self, stream: RegisteredStream, record: records.PromptRecord) -> int:
        """A prompt for a stream ingested elsewhere (or whose ingest returned), placed by
        reading the topic back: the frame it applies at."""
        last = newest_record(self.cfg.kafka, self.reader, stream.id)
        if isinstance(last, records.ControlRecord) and last.kind == "end":
            raise ConflictError(f"stream {stream.id!r} ended at frame {last.frame_idx}")
        check_prompt_frame(record, next_frame_after(last, stream.first_frame))
        offset = self._send(record)
        if record.frame_idx is not None:
            return record.frame_idx
        before = newest_record(self.cfg.kafka, self.reader, stream.id, offset)
        return next_frame_after(before, stream.first_frame)

    def health(self) -> dict[str, str]:
        """``ok`` or the error, for the broker and the object store: one metadata request and
        one store read, whatever the number of streams (anyone may ask, ``GET /healthz``)."""
        out = {}
        try:
            if not self.producer.partitions_for(self.cfg.kafka.frames_topic):
                raise RuntimeError(f"topic {self.cfg.kafka.frames_topic} has no partitions")
            out["broker"] = "ok"
        except Exception as exc:  # reported, not raised: it is a health check
            out["broker"] = f"error: {redact_credentials(brief(exc))}"
        try:
            self.registry.probe()
            out["store"] = "ok"
        except Exception as exc:  # as above
            out["store"] = f"error: {redact_credentials(brief(exc))}"
        return out

    # -- helpers -----------------------------------------------------------------------------
    def _registered(self, stream_id: str) -> RegisteredStream:
        stream = self.registry.get(stream_id)
        if stream is None:
            raise NotFoundError(f"no stream {stream_id!r}; GET /streams lists them")
        return stream

    def _object_ids(
        self, stream: RegisteredStream, wanted: list[int | None]
    ) -> tuple[list[int], RegisteredStream]:
        given = [i for i in wanted if i is not None]
        if len(set(given)) != len(given):
            raise InvalidInputError(f"prompt for {stream.id!r}: object ids {given} repeat")
        nxt = max([stream.next_object_id, *(i + 1 for i in given)])
        if min(given, default=0) < 0 or nxt + wanted.count(None) - 1 > MAX_OBJECT_ID:
            raise InvalidInputError(  # refused before anything is saved
                f"prompt for {stream.id!r}: object ids run from 0 to {MAX_OBJECT_ID}"
            )
        ids = []
        for i in wanted:
            if i is None:  # above every id used so far, so never one given
                i, nxt = nxt, nxt + 1
            ids.append(i)
        if nxt != stream.next_object_id:
            stream = dataclasses.replace(stream, next_object_id=nxt)
            self.registry.put(stream)
        return ids, stream

    def _send(self, record: records.Record) -> int:
        """Send one record to the stream's partition; the offset it landed at."""
        value, kind = records.encode(record)
        partition = kafka.partition_for(record.stream_id, self.cfg.kafka.partitions)
        return (
            kafka.send(
                self.producer,
                self.cfg.kafka.frames_topic,
                record.stream_id,
                value,
                kind,
                partition=partition,
            )
            .get(timeout=30)
            .offset
        )

    def _start_ingest(self, stream: RegisteredStream) -> None:
        ingest_cfg = self.cfg.ingest
        if stream.fps is not None:
            ingest_cfg = dataclasses.replace(ingest_cfg, fps=stream.fps)
        self.ingests[stream.id] = self.ingest_processes.start(
            stream.id, stream.source, ingest_cfg, first_frame=stream.first_frame
        )

    def _report(self, stream_id: str) -> IngestReport | None:
        """The ingest's report now; one that returned leaves its report and frees its place
        (a process left with no stream ends)."""
        ing = self.ingests.get(stream_id)
        if ing is None:
            return self.reports.get(stream_id)
        done, _ = ray.wait([ing.run], timeout=0)
        if not done:
            try:
                self.reports[stream_id] = ray.get(ing.report(), timeout=10)
            except ray.exceptions.RayError as exc:  # busy or restarting: the last one known
                log.warning("ingest of %s did not report: %s", stream_id, exc)
            return self.reports.get(stream_id)
        try:
            report = ray.get(ing.run)
        except ray.exceptions.RayError as exc:  # it raised: the source could not be read
            last = self.reports.get(stream_id) or IngestReport(stream_id)
            reason = redact_credentials(str(getattr(exc, "cause", None) or exc).splitlines()[0])
            log.warning("ingest of %s failed: %s", stream_id, reason)  # details: the log only
            failed = f"ingest failed: {SOURCE_FAILED}"
            report = dataclasses.replace(last, state="failed", drops=[*last.drops, failed])
        with self._reaping:
            if self.ingests.get(stream_id) is ing:
                self.reports[stream_id] = report
                del self.ingests[stream_id]
                self.ingest_processes.release(stream_id)
        return report

    def _info(self, stream: RegisteredStream) -> StreamInfo:
        return StreamInfo(stream, self._report(stream.id))


StreamManagerActor = ray.remote(num_cpus=0, max_concurrency=16, max_restarts=-1)(StreamManager)
"""Threads: a slow removal (it waits for its ingest to stop) does not hold up the others."""
