"""The SegmentationWorker: owns a model, consumes its partitions, writes tracks and
checkpoints.

It reads its partitions of the frames topic by explicit assignment (never a consumer
group: the coordinator hands partitions out), validates every record, sends invalid ones to
the dead-letter topic with the reason and goes on, and steps all ready streams as one batch
through :class:`StreamProcessor`. Tracks go to the tracks topic and the Parquet dataset;
each stream's checkpoints go to the object store (:mod:`.checkpoint`, :mod:`.recovery`).

Slow work happens between polls, never inside a Kafka callback: the model step on the
polling thread (its lanes on their own threads), then the sinks (Arrow encoding, Parquet,
the tracks topic) for the frames it emitted, in order, then the snapshots of streams due a
checkpoint. The sinks run inline on purpose: on a writer thread their Python competes for
the GIL with the lanes' op dispatch and bought nothing (``bench/pipeline.py``). Checkpoints
are written on their own thread, since storage round trips wait on the network, not the
GIL. The class is plain Python; :data:`SegmentationWorkerActor` is its Ray actor.

Rooms: each stream's record and the loop's queues of streams (due a checkpoint, leaving
memory, waiting for a page-in) belong to :class:`~.lifecycle.StreamBook`; frames, prompts and
model states to the processor (asked through its query methods); the weights file's lookup
and version to :mod:`ausm_stream.model.versions`; the allocator's settings to
:mod:`.allocator`.

Failures: a record that fails in any way while it is decoded or queued goes to the
dead-letter topic like an invalid one (a bug it triggers must not stop its partition). Any
other error ends :meth:`SegmentationWorker.run` after the worker has dropped what memory
held of its streams, so that the next run (the coordinator starts one after a back-off)
recovers them all from their checkpoints, as a restarted process would. While the loop runs
it pushes its status to the coordinator every second: that is its heartbeat, which
``GET /healthz`` reads (a loop stuck in a call stops it).

Store outages are none of those failures: the loop goes on stepping what it holds while the
object store fails, and nothing is dropped. Checkpoints wait in the writer (:mod:`.recovery`),
Parquet windows in their sink (:mod:`~ausm_stream.pipeline.sinks`), each tried again after a
back-off; a stream that owes a window is not checkpointed until it is written (the commit
order, :meth:`SegmentationWorker._checkpoint_due`); the records of a stream that cannot be
paged in from its checkpoint wait in the worker, in order, and the page-in is tried again
after a back-off while the other streams go on (:meth:`SegmentationWorker._retry_deferred`).
Every S3 call has bounded timeouts (``storage.timeout_s``), so a black-holed store costs the
loop one call's timeout per back-off, not minutes. :attr:`SegmentationWorker.store_health`
counts the failures and how long the store has been failing.

Broker outages neither: the producer retries each tracks window in order until the brokers
take it (``kafka.delivery_timeout_s``); a window stays owed in its sink until acknowledged,
so no checkpoint covers it, and :attr:`SegmentationWorker.broker_health` reports the outage
(a window unacknowledged for ``kafka.ACK_STALL_S``, or given up and sent again). A failed
run gets a new producer, as a new process would.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Literal

import ray
import torch
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError

from ausm_stream.errors import RecordError
from ausm_stream.model import load_model
from ausm_stream.operators.allocator import configure_allocator, release_freed_memory
from ausm_stream.operators.checkpoint import Checkpoint, CheckpointStore, PartitionManifest
from ausm_stream.operators.lifecycle import StreamBook
from ausm_stream.operators.page_ins import PageIns
from ausm_stream.operators.processor import StreamProcessor
from ausm_stream.operators.recovery import CheckpointWriter, RecoveryPlan, recovery_plan
from ausm_stream.operators.status import (
    Preview,
    StreamStats,
    StreamStatus,
    WorkerStatus,
    peak_rss_bytes,
    rss_bytes,
)
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import PipelineConfig, WorkerConfig
from ausm_stream.pipeline.ids import shown
from ausm_stream.pipeline.sinks import KafkaTrackSink, ParquetSink, TrackSinks
from ausm_stream.pipeline.storage import Backoff, ServiceHealth, is_store_error, open_store
from ausm_stream.pipeline.tracks import FrameTracks

log = logging.getLogger(__name__)

ERROR_HEADER = "ausm-error"
SOURCE_HEADER = "ausm-source"
STATUS_PUSH_S = 1.0
"""How often a running worker hands its status to the coordinator (how stale the API's
numbers may be)."""
PREVIEW_PUSH_S = 3.0
"""How often it hands over, with its status, the latest frame of each stream it stepped
since (the live page refreshes every 3 s): previews never cost a call into a worker."""
POLL_RECORDS = 32
"""Records one poll hands over at most (a chunk of 8 frames each by default), so that the
frames a worker holds stay near ``worker.max_queued_bytes``."""
CHECKPOINT_BACKLOG = 4
"""Most checkpoints waiting for or in the writer. Each holds copies of a stream's state while
it is encoded and uploaded (~4, measured as 100 MB for 8 in flight), so this bounds their
memory when many streams are due at once."""


class InjectedFault(RuntimeError):
    """What :meth:`SegmentationWorker.inject_fault` raises in the loop: a stand-in for a bug."""


def model_settings(worker: WorkerConfig) -> dict[str, object]:
    """The model's runtime settings that a worker's configuration sets (the rest stay as the
    weights file stores them)."""
    settings: dict[str, object] = {
        "step_lanes": worker.cpus,
        "state_dtype": worker.state_dtype,
        "autocast": worker.autocast,
        "scan_backend": worker.scan_backend,
    }
    if worker.batch_cells is not None:
        settings["batch_cells"] = worker.batch_cells
    return settings


class SegmentationWorker:
    """Consumes its partitions, steps their streams, writes tracks and checkpoints.

    Recovery is the same path as a first start: :meth:`run` first recovers every partition
    it owns from the object store (:func:`~.recovery.recovery_plan`), so a worker restarted
    by Ray after a crash, a whole pipeline started again, and a worker handed a partition
    that moved all resume where the last checkpoints left off and replay the rest.

    Checkpoint cadence: a stream is checkpointed when it completes a window of
    ``worker.checkpoint_frames`` frames (default: the Parquet window, so the sinks' buffers
    are empty then), every ``worker.checkpoint_seconds`` if it progressed, when it ends, when
    its partition is released and when the worker stops. The snapshot is taken between
    steps; serialising and writing it happen on the :class:`~.recovery.CheckpointWriter`
    thread.
    """

    def __init__(
        self,
        cfg: PipelineConfig,
        bootstrap: str,
        partitions: list[int],
        coordinator: str | None = None,
        name: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.bootstrap = bootstrap
        self.partitions = list(partitions)
        self.coordinator = coordinator
        self.name = name
        # One torch thread per lane, one lane per reserved core: streams run side by side, and
        # outputs do not depend on how many cores a worker has (replays elsewhere match).
        torch.set_num_threads(1)
        configure_allocator()
        self.model, self.model_version = load_model(
            cfg.model.weights, cfg.worker.device, **model_settings(cfg.worker)
        )
        self.store = open_store(cfg.storage)
        self.store_health = ServiceHealth()
        """Failed object-store calls of this worker (checkpoints, Parquet, page-ins) and how
        long the store has been failing."""
        self.checkpoints = CheckpointStore(
            self.store, self.model.cfg, self.model_version, keep=cfg.worker.checkpoints_kept
        )
        self.broker_health = ServiceHealth("Kafka brokers")
        """Tracks windows the brokers did not take or acknowledge (retried with back-off)."""
        self.producer = self._new_producer()
        self.sinks = TrackSinks(
            self.model_version,
            parquet=ParquetSink(
                self.store,
                self.model_version,
                cfg.worker.parquet_frames,
                Backoff.of(cfg.storage),
                self.store_health,
            ),
            kafka=KafkaTrackSink(
                self.producer,
                cfg.kafka.tracks_topic,
                cfg.ingest.chunk_frames,
                self.model_version,
                Backoff.of(cfg.storage),
                self.broker_health,
            ),
        )
        self.processor = StreamProcessor(
            self.model,
            self._write,
            seed=cfg.model.seed,
            max_batch=cfg.worker.max_batch,
            on_end=self._end_stream,
            on_rejected=self._reject_prompt,
            resident_streams=cfg.worker.resident_streams,
            host_state_bytes=cfg.worker.host_state_bytes,
            max_lag_s=cfg.worker.max_lag_s if cfg.worker.lag_policy == "skip_to_live" else None,
        )
        # A full batch, ready before the first frame arrives: the first step of a process
        # builds kernels and lane threads, and a batch's working memory is then the model's.
        self.model.warm_up(streams=max(cfg.worker.cpus, self.processor.max_batch))
        self.writer = self._new_writer()
        self.checkpoint_frames = cfg.worker.checkpoint_frames or cfg.worker.parquet_frames
        h, w = self.model.cfg.image_size
        self.frame_bytes = h * w * 3
        self.book = StreamBook(cfg.worker.preview_streams)
        """Each stream's record and the loop's queues of streams (:mod:`.lifecycle`)."""
        self.dead_letters = 0
        self.run_seconds = 0.0
        self.cpu_seconds = 0.0
        self.recovered_streams = 0
        self.store_page_ins = 0
        self.partition_lag: dict[int, int] = {}
        """Per owned partition, records in Kafka not read yet (as of the last poll)."""
        self.positions: dict[int, int] = {}
        """Per owned partition, the offset after the last record read."""
        self.page_ins = PageIns(self.checkpoints)
        """Checkpoints of streams coming back into memory, loaded off the loop."""
        self._page_in_backoff = Backoff.of(cfg.storage)
        self._last_idle_check = time.monotonic()
        self._last_periodic = time.monotonic()
        self._last_push = 0.0
        self._last_preview_push = 0.0
        self._lag: kafka.LagCommitter | None = None
        self._consumer: KafkaConsumer | None = None
        self._commands: queue.Queue[tuple[str, list[int], threading.Event]] = queue.Queue()
        self._stop = threading.Event()
        self._fault: tuple[str, float] | None = None

    def _new_producer(self) -> KafkaProducer:
        """The producer of tracks and dead letters. A full buffer (the brokers away for long)
        fails a send after a second instead of holding the loop: the window stays owed and
        is sent again later."""
        return kafka.make_producer(self.cfg.kafka, self.bootstrap, max_block_ms=1000)

    def _new_writer(self) -> CheckpointWriter:
        return CheckpointWriter(
            self.checkpoints,
            self.cfg.kafka.frames_topic,
            flush_sinks=lambda: self.producer.flush(),  # the producer of the moment
            on_written=self._checkpoint_written,
            backoff=Backoff.of(self.cfg.storage),
            health=self.store_health,
        )

    # -- sinks (in emit order) ----------------------------------------------------------------
    def _write(self, frame: FrameTracks) -> None:
        rows = self.sinks.add(frame)
        if frame.image is not None and self.book.preview_streams:
            # A copy: the frame would otherwise hold its whole chunk in memory.
            image = frame.image.copy()
            self.book.keep_preview(Preview(frame.stream_id, frame.frame_idx, image, rows))
        st = self.book.record(frame.stream_id).stats
        now = time.monotonic()
        self.book.active(frame.stream_id, now)
        if (frame.frame_idx + 1) % self.checkpoint_frames == 0:
            self.book.due.add(frame.stream_id)
        if frame.skipped:
            st.skipped += 1
            return
        st.first_step = st.first_step or now
        st.last_step = now
        st.frames += 1
        st.active_tracks = len(frame.track_ids)
        if len(frame.track_ids):  # ids count from 1 per stream: the highest is how many
            st.tracks = max(st.tracks, int(frame.track_ids.max()))

    def _end_stream(self, stream_id: str) -> None:
        self.sinks.end(stream_id)
        st = self.book.record(stream_id).stats
        st.ended = True
        self.book.due.add(stream_id)
        log.info("stream %s ended after %d frames", stream_id, st.frames)

    def _dead_letter(self, key: str, value: bytes, kind: str, source: str, reason: str) -> None:
        self.dead_letters += 1
        error = kafka.error_header(reason)  # cut to 4 KiB: a header, and a log line
        log.warning(
            "dead-lettered %s record of %s (%s): %s", kind, shown(key), source, error.decode()
        )
        kafka.send(
            self.producer,
            self.cfg.kafka.dead_letter_topic,
            key,
            value,
            kind,
            extra_headers=[(ERROR_HEADER, error), (SOURCE_HEADER, source.encode())],
        )

    def _reject_prompt(self, prompt: records.PromptRecord, reason: str) -> None:
        value, kind = records.encode(prompt)
        self._dead_letter(prompt.stream_id, value, kind, self.cfg.kafka.frames_topic, reason)

    # -- checkpoints ---------------------------------------------------------------------------
    def _partition_of(self, stream_id: str) -> int:
        return kafka.partition_for(stream_id, self.cfg.kafka.partitions)

    def _checkpoint(self, stream_ids: set[str]) -> None:
        """Snapshot streams now (between steps) and hand them to the writer thread."""
        for sid in sorted(stream_ids):
            if not self.processor.holds(sid):
                continue
            partition = self._partition_of(sid)
            snap = self.processor.snapshot(sid, self.positions.get(partition, 0))
            self.writer.submit(Checkpoint(snap, self.sinks.pending(sid)), partition)
        self.book.progressed -= stream_ids

    def _checkpoint_written(self, stream_id: str, frame: int) -> None:
        """On the writer thread: a stream's checkpoint, resuming at ``frame``, is stored."""
        rec = self.book.records.get(stream_id)
        if rec is not None:
            rec.stats.last_checkpoint = frame

    def _log_lag(self) -> None:
        """The streams furthest behind, once per ``worker.checkpoint_seconds``."""
        behind = self.processor.furthest_behind(5)
        if behind:
            worst = ", ".join(f"{sid} {n} frames / {lag:.1f} s" for sid, n, lag in behind)
            log.info("lag: streams with frames queued, furthest behind: %s", worst)

    def _checkpoint_due(self) -> None:
        w = self.cfg.worker
        now = time.monotonic()
        book = self.book
        if now - self._last_periodic >= w.checkpoint_seconds:
            book.due |= book.progressed
            self._last_periodic = now
            self._log_lag()
        if now - self._last_idle_check >= 1.0:
            self._last_idle_check = now
            release_freed_memory()
            if w.idle_page_out_s:
                book.to_store |= self._idle(now, w.idle_page_out_s)
        pending = book.leaving | book.to_store
        book.to_store |= set(
            self.processor.states.over_budget(
                lambda sid: sid not in pending and self._is_movable(sid), pending
            )
        )
        book.due |= book.to_store
        self.sinks.retry()  # windows the store failed, once their back-off is over
        room = CHECKPOINT_BACKLOG - self.writer.backlog
        # The commit order: a stream that owes a window (the store failed its Parquet file) is
        # not snapshotted, so no checkpoint covers frames before their Parquet file is written.
        # It stays due until the window is written.
        ready = {sid for sid in book.due if not self.sinks.owes(sid)}
        if ready and room > 0:
            # Those leaving memory first; the rest wait for room (a few loops at most).
            order = sorted(ready & book.to_store) + sorted(ready - book.to_store)
            self._checkpoint_leaving(set(order[:room]))
        if book.leaving and self.writer.idle():
            self._let_streams_go()

    def _checkpoint_leaving(self, taken: set[str]) -> None:
        """Checkpoint ``taken``; those chosen to page out, and ended ones, then leave memory
        once written (:meth:`_let_streams_go`)."""
        book = self.book
        book.due -= taken
        self._checkpoint(taken)
        closed = {sid for sid in taken if self.processor.is_closed(sid)}
        book.leaving |= (taken & book.to_store) | closed
        book.to_store -= taken

    def _checkpoint_all(self, stream_ids: set[str]) -> None:
        """Checkpoint many streams and wait until all are written, ``CHECKPOINT_BACKLOG`` at a
        time (a release or a stop of a worker with thousands of streams). Windows the store
        failed are written first (the commit order)."""
        self._write_owed_windows()
        order = sorted(stream_ids)
        for i in range(0, len(order), CHECKPOINT_BACKLOG):
            self._checkpoint_leaving(set(order[i : i + CHECKPOINT_BACKLOG]))
            self.writer.wait()
        self.writer.wait()  # and those submitted before

    def _write_owed_windows(self, timeout_s: float = 120.0) -> None:
        """Write the windows the store failed, trying again after each back-off until it
        takes them (``TimeoutError`` after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while not self.sinks.retry():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Parquet windows not written within {timeout_s} s: the object store has "
                    f"been failing for {self.store_health.outage_s:.0f} s "
                    f"({self.store_health.last_error})"
                )
            time.sleep(0.1)

    def _is_movable(self, stream_id: str) -> bool:
        """A stream may leave memory for the object store: nothing queued (its checkpoint
        then holds all of it) and not ended (those leave anyway)."""
        return self.processor.is_quiet(stream_id) and not self.sinks.owes(stream_id)

    def _idle(self, now: float, after_s: float) -> set[str]:
        """Movable streams without a record or step for more than ``after_s``."""
        records = self.book.records

        def since(sid: str) -> float:
            rec = records.get(sid)
            return 0.0 if rec is None or rec.last_active is None else now - rec.last_active

        return {
            sid
            for sid in self.processor.stream_ids()
            if since(sid) > after_s and self._is_movable(sid)
        }

    def _let_streams_go(self) -> None:
        """Streams whose last checkpoint is written leave memory (model state, entry, sink
        buffers): ended ones, those idle for ``worker.idle_page_out_s`` and those beyond the
        host budget (``worker.host_state_bytes``). Only a stream unchanged since its
        checkpoint goes. Records of one that arrive later page it back in
        from that checkpoint (:meth:`_page_in`). An ended stream's small stats stay for the
        status (:meth:`~.lifecycle.StreamBook.left_memory`)."""
        book, processor = self.book, self.processor
        for sid in sorted(book.leaving):
            if (
                not processor.holds(sid)
                or processor.has_queued(sid)
                or sid in book.progressed
                or self.sinks.owes(sid)
            ):
                continue
            book.record(sid).stats.gaps = processor.gaps(sid)
            ended = processor.is_closed(sid)
            self._forget(sid)
            book.left_memory(sid, ended)
        book.leaving.clear()

    def _forget(self, stream_id: str) -> None:
        """Drop what memory holds of a stream: its entry and state, its sinks' buffers (its
        record stays, with its stats: :meth:`_release` forgets those)."""
        self.processor.forget(stream_id)
        self.sinks.forget(stream_id)

    def _page_in(self, stream_id: str, offset: int) -> bool:
        """A record of a stream not in memory, read at ``offset``: if the stream has a
        checkpoint (it left memory, ended, or its partition's manifest no longer lists it
        because it ended), resume it from there; else it is new. ``False`` while its
        checkpoint loads off the loop (:mod:`.page_ins`: the record waits, the other streams
        step on), or when the object store failed (within its back-off): the stream stays
        out of memory.

        A checkpoint taken past ``offset`` belongs to an earlier life of the topic (an
        embedded broker restarted): it is ignored with a log line, and the stream starts
        over, as :meth:`_recover` does for whole partitions."""
        if not self._page_in_backoff.ready():
            return False
        load = self.page_ins.finished(stream_id)
        if load is None:
            return False
        try:
            loaded = load.result()
        except Exception as exc:
            if not is_store_error(exc):
                raise
            delay = self._page_in_backoff.failed()
            self.store_health.failed(f"paging in stream {stream_id}", exc, delay)
            log.warning(
                "stream %s: not paged in (the object store failed); its records wait here and "
                "the page-in is tried again",
                stream_id,
            )
            return False
        self._page_in_backoff.succeeded()
        self.store_health.ok()
        self.book.paged_in(stream_id)
        if loaded is None:
            return True
        if loaded[0].snapshot.offset > offset:
            log.error(
                "stream %s: its checkpoint resumes at offset %d, past the record at %d: the "
                "topic was recreated; the stream starts from scratch",
                stream_id,
                loaded[0].snapshot.offset,
                offset,
            )
            return True
        self._restore(loaded[0], recovered=False)
        return True

    def _defer(self, stream_id: str, msg: ConsumerRecord) -> None:
        """Keep a record of a stream being paged in (or whose page-in failed), behind its
        earlier ones. Its partition's manifest holds the stream from this offset on, so that
        a worker that fails meanwhile replays the record instead of skipping it."""
        self.book.waiting.setdefault(stream_id, []).append(msg)
        self.writer.note_stream(msg.partition, stream_id, msg.offset)

    def _retry_deferred(self) -> None:
        """Page in the streams whose records wait and whose checkpoints have loaded (or,
        after a failure, once the back-off allows), then queue their records in order."""
        waiting = self.book.waiting
        for sid in list(waiting):
            if not self._page_in(sid, waiting[sid][0].offset):
                continue
            msgs = waiting.pop(sid)
            log.debug("stream %s: paged in; its %d waiting records are queued", sid, len(msgs))
            for msg in msgs:
                self._queue(msg, kafka.header(msg.headers, records.KIND_HEADER), sid)

    def _deferred_bytes(self) -> int:
        """Bytes of the records waiting for their stream's page-in (usually none)."""
        return sum(len(m.value or b"") for msgs in self.book.waiting.values() for m in msgs)

    def _commit_lag(self) -> None:
        """Offer Kafka what the written checkpoints cover: the last step of the commit
        order, for lag monitoring only (recovery never reads it), committed off the loop."""
        assert self._lag is not None
        marks = self.writer.watermarks()
        self._lag.offer({p: offset for p, offset in marks.items() if p in self.partitions})

    # -- partitions ----------------------------------------------------------------------------
    def _recover(self, partitions: list[int]) -> None:
        """Load the partitions' checkpoints and seek each to where its streams resume."""
        assert self._consumer is not None
        topic = self.cfg.kafka.frames_topic
        seeks: dict[int, int | None] = {}
        ends = kafka.end_offsets(self.cfg.kafka, self.bootstrap, topic, partitions)
        topic_id = kafka.topic_id(self.cfg.kafka, self.bootstrap, topic)
        for p in partitions:
            plan = recovery_plan(self.checkpoints, topic, p, self.cfg.kafka.partitions, topic_id)
            end = ends[p]
            taken_at = max([plan.manifest.position, *(c.snapshot.offset for c in plan.restored)])
            if taken_at > end:
                log.error(
                    "%s/%d ends at offset %d but its checkpoints were taken at offset %d: the "
                    "topic was recreated (an embedded broker keeps topics in memory); its "
                    "streams start from scratch",
                    topic,
                    p,
                    end,
                    taken_at,
                )
                plan = RecoveryPlan(p, None, PartitionManifest(topic, p, 0, topic_id=topic_id))
            for ckpt in plan.restored:
                self._restore(ckpt)
            self.writer.track(plan.manifest)
            seeks[p] = plan.seek
        self.partitions = sorted(set(self.partitions) | set(partitions))
        self._assign()
        for p, offset in seeks.items():
            tp = TopicPartition(topic, p)
            if offset is None:
                self._consumer.seek_to_beginning(tp)
                self.positions[p] = 0
            else:
                self._consumer.seek(tp, offset)
                self.positions[p] = offset
            log.info("partition %d: reading from offset %s", p, offset)

    def _restore(self, ckpt: Checkpoint, recovered: bool = True) -> None:
        """Resume a stream from its checkpoint: after a failure or a move (``recovered``), or
        paged back in from the object store (its stats stayed here)."""
        snap = ckpt.snapshot
        self.processor.restore(snap)
        self.sinks.restore(snap.stream_id, ckpt.pending)
        known = snap.stream_id in self.book.records
        rec = self.book.restored(snap.stream_id, snap.offset, time.monotonic())
        if snap.ended:  # nothing to resume: it stays out of memory unless records come
            self.book.leaving.add(snap.stream_id)
        if not recovered and known:
            self.store_page_ins += 1
            return
        st = rec.stats = StreamStats(
            frames=snap.frames_done,
            skipped=snap.skipped,
            tracks=snap.state.next_track_id - 1,
            gaps=snap.gaps,
            ended=snap.ended,
            resumed_at=snap.next_frame,
            last_checkpoint=snap.next_frame,
        )
        self.recovered_streams += 1
        log.info(
            "stream %s restored at frame %d (%d frames done%s)",
            snap.stream_id,
            snap.next_frame,
            st.frames,
            ", ended" if st.ended else "",
        )

    def _release(self, partitions: list[int]) -> None:
        """Checkpoint the partitions' streams, wait until written, then drop them."""
        gone = set(partitions)
        streams = {s for s in self.processor.stream_ids() if self._partition_of(s) in gone}
        self._checkpoint_all(streams)
        known = {*self.book.records, *self.book.waiting}
        for sid in streams | {s for s in known if self._partition_of(s) in gone}:
            self._forget(sid)
            self.book.forget(sid)
            self.page_ins.forget(sid)
        for p in gone:
            self.writer.untrack(p)
            self.positions.pop(p, None)
        self.partitions = [p for p in self.partitions if p not in gone]
        self._assign()

    def _assign(self) -> None:
        """Assign the owned partitions, keeping the position of those already read."""
        assert self._consumer is not None
        topic = self.cfg.kafka.frames_topic
        kafka.assign(self._consumer, topic, self.partitions)
        for p in self.partitions:
            if p in self.positions:  # never the lag group's committed offset
                self._consumer.seek(TopicPartition(topic, p), self.positions[p])

    def acquire(self, partitions: list[int], timeout_s: float = 120.0) -> list[int]:
        """Take over partitions (recovering their streams); returns the owned partitions."""
        return self._command("acquire", partitions, timeout_s)

    def release(self, partitions: list[int], timeout_s: float = 120.0) -> list[int]:
        """Hand partitions back after checkpointing their streams; returns those still owned."""
        return self._command("release", partitions, timeout_s)

    def _command(self, kind: str, partitions: list[int], timeout_s: float) -> list[int]:
        if self._consumer is None:  # not running: the next run starts with the new set
            now = set(self.partitions)
            now = now | set(partitions) if kind == "acquire" else now - set(partitions)
            self.partitions = sorted(now)
            return self.partitions
        done = threading.Event()
        self._commands.put((kind, list(partitions), done))
        if not done.wait(timeout_s):
            raise TimeoutError(f"worker did not {kind} partitions {partitions} in {timeout_s} s")
        return self.partitions

    def _run_commands(self) -> None:
        while not self._commands.empty():
            kind, partitions, done = self._commands.get()
            if kind == "acquire":
                self._recover([p for p in partitions if p not in self.partitions])
            else:
                self._release([p for p in partitions if p in self.partitions])
            done.set()

    # -- the loop ----------------------------------------------------------------------------
    def handle(self, msg: ConsumerRecord) -> None:
        """Check, decode and queue one message; invalid ones go to the dead-letter topic
        (among them records without a key, keyed by no stream id, or on another partition
        than their key's: :func:`~ausm_stream.pipeline.kafka.stream_key`). Records that a
        restored stream's checkpoint already covers are skipped."""
        p = msg.partition
        kind = kafka.header(msg.headers, records.KIND_HEADER)
        try:
            key = kafka.stream_key(msg, self.cfg.kafka.partitions)
        except RecordError as exc:
            self._dead_letter_msg(msg, kind, exc)
        else:
            if key in self.book.waiting or (
                not self.processor.holds(key) and not self._page_in(key, msg.offset)
            ):
                self._defer(key, msg)  # its checkpoint loads off the loop: it waits here
            else:
                self._queue(msg, kind, key)
        self.positions[p] = msg.offset + 1
        self.writer.note_position(p, msg.offset + 1)

    def _queue(self, msg: ConsumerRecord, kind: str | None, key: str) -> None:
        """Queue a record of a stream in memory (or new), unless its checkpoint covers it."""
        try:
            rec = self.book.records.get(key)
            if rec is None or msg.offset >= rec.resume_offset:
                record = self._take(msg, kind, key)
                if isinstance(record, records.ControlRecord) and record.kind == "reset":
                    self.book.new_life(record.stream_id)
                self.writer.note_stream(msg.partition, record.stream_id, msg.offset)
                self.book.active(record.stream_id, time.monotonic())
        except RecordError as exc:
            self._dead_letter_msg(msg, kind, exc)

    def _dead_letter_msg(self, msg: ConsumerRecord, kind: str | None, exc: RecordError) -> None:
        self._dead_letter(
            (msg.key or b"").decode(errors="replace"),
            msg.value or b"",
            kind or "unknown",
            f"{msg.topic}/{msg.partition}/{msg.offset}",
            str(exc),
        )

    def _take(self, msg: ConsumerRecord, kind: str | None, key: str) -> records.Record:
        """Decode a record and queue it. An error on the way is the record's (a bug it
        triggers, which no check foresaw): it goes to the dead-letter topic, and its
        partition goes on, where a worker-level failure would replay it for ever. Running
        out of memory is the worker's."""
        try:
            record = records.decode(kind, msg.value or b"", key, self.model.cfg.image_size)
            self.processor.on_record(record, msg.offset)
        except (RecordError, MemoryError, torch.OutOfMemoryError):
            raise
        except Exception as exc:
            log.exception("%s record of %s failed unexpectedly", kind, shown(key))
            raise RecordError(
                f"{kind or 'unknown'} record of {key!r} failed unexpectedly while read: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return record

    def _note_highwater(self) -> None:
        """Per owned partition, the records in Kafka past what was read: frames ingested
        but not fetched yet (back-pressure), which per-stream lag cannot see."""
        assert self._consumer is not None
        topic = self.cfg.kafka.frames_topic
        behind = {}
        for p in self.partitions:
            high = self._consumer.highwater(TopicPartition(topic, p))
            if high is not None:
                behind[p] = max(0, high - self.positions.get(p, 0))
        self.partition_lag = behind

    def _backpressure(self) -> bool:
        """Fetched frames waiting past ``worker.max_queued_bytes`` (``process_all`` only)."""
        if self.cfg.worker.lag_policy != "process_all":
            return False
        queued = self.processor.backlog() * self.frame_bytes + self._deferred_bytes()
        return queued >= self.cfg.worker.max_queued_bytes

    def _owned(self, stream_ids: set[str]) -> set[str]:
        mine = set(self.partitions)
        return {s for s in stream_ids if self._partition_of(s) in mine}

    def run(
        self,
        until_ended: set[str] | None = None,
        idle_timeout_s: float | None = None,
        max_seconds: float | None = None,
    ) -> WorkerStatus:
        """Recover, then consume and segment until every stream of ``until_ended`` on this
        worker's partitions has ended, nothing has arrived for ``idle_timeout_s``,
        ``max_seconds`` passed, or :meth:`stop` is called. Checkpoints everything on the way
        out.

        An error (not a record's: those are dead-lettered) ends the run, with the worker's
        streams dropped from memory (:meth:`_drop_streams`), ready for the next run: the
        coordinator starts it after a back-off."""
        try:
            return self._run(until_ended, idle_timeout_s, max_seconds)
        except Exception:
            log.exception(
                "worker %s: its loop failed; its streams are dropped from memory, and the next "
                "run recovers them from their checkpoints",
                self.name,
            )
            self._drop_streams()
            raise

    def _run(
        self,
        until_ended: set[str] | None,
        idle_timeout_s: float | None,
        max_seconds: float | None,
    ) -> WorkerStatus:
        coordinator = None
        if self.coordinator is not None:  # a restarted actor asks who owns what now
            coordinator = ray.get_actor(self.coordinator)
            self.partitions = ray.get(coordinator.partitions_of.remote(self.name))
        self._consumer = kafka.make_consumer(self.cfg.kafka, self.bootstrap)
        self._lag = kafka.LagCommitter(self.cfg.kafka, self.bootstrap, self.cfg.kafka.frames_topic)
        owned, self.partitions = self.partitions, []
        self._recover(owned)
        started = last_activity = time.monotonic()
        cpu_started = time.process_time()
        try:
            while not self._stop.is_set():
                self._take_fault()
                self._run_commands()
                # One batch per poll: a backlog makes the poll non-blocking, and frames that
                # arrived meanwhile join the next batch instead of waiting for a drained queue.
                # Checkpoints waiting for room in the writer shorten the wait (page-outs of
                # many streams at once go at the writer's pace, not one batch per poll).
                if self.processor.backlog():
                    wait_ms = 0
                elif self.book.due or self.book.waiting:
                    wait_ms = min(10, self.cfg.worker.poll_ms)
                else:
                    wait_ms = self.cfg.worker.poll_ms
                polled = {}
                if not self._backpressure():
                    polled = self._consumer.poll(timeout_ms=wait_ms, max_records=POLL_RECORDS)
                for msgs in polled.values():
                    for msg in msgs:
                        self.handle(msg)
                self._retry_deferred()
                self._note_highwater()
                stepped = self.processor.step_ready()
                self._checkpoint_due()
                self._commit_lag()
                self._push_status(coordinator)
                now = time.monotonic()
                if polled or stepped or self.book.waiting:
                    last_activity = now
                if until_ended is not None and all(
                    s in self.book.records and self.book.records[s].stats.ended
                    for s in self._owned(until_ended)
                ):
                    break
                if idle_timeout_s is not None and now - last_activity > idle_timeout_s:
                    break
                if max_seconds is not None and now - started > max_seconds:
                    break
            self._checkpoint_all(self.book.progressed | self.book.due)  # resumes exactly
            self._let_streams_go()
            self._commit_lag()
        finally:
            # Records still waiting for a page-in are read again by the next run: its recovery
            # seeks to where the partition's manifest holds them (:meth:`_defer`).
            self.book.waiting.clear()
            self.page_ins.clear()
            self._deliver()
            self._lag.close()
            self._consumer.close()
            self._consumer = None
            self.run_seconds += time.monotonic() - started
            self.cpu_seconds += time.process_time() - cpu_started
        return self.status()

    def _deliver(self) -> None:
        """Wait for the brokers to take the dead letters and tracks sent, ``kafka.STOP_FLUSH_S``
        at most: tracks not acknowledged by then are owed, so no checkpoint covers them and
        the next run sends them again."""
        try:
            self.producer.flush(timeout=kafka.STOP_FLUSH_S)
        except KafkaTimeoutError:
            log.warning("worker %s: the Kafka brokers did not take everything sent", self.name)

    def _push_status(self, coordinator: ray.actor.ActorHandle | None) -> None:
        """Hand the coordinator this worker's status every ``STATUS_PUSH_S``, from the loop's
        own thread: the control plane reads it there, so API requests do not reach a worker
        (a call into a busy worker's process cost its step ~2% per request a second, measured
        with ``bench/api.py``)."""
        now = time.monotonic()
        if coordinator is None or now - self._last_push < STATUS_PUSH_S:
            return
        self._last_push = now
        previews = []
        if now - self._last_preview_push >= PREVIEW_PUSH_S:
            self._last_preview_push = now
            previews = self.book.unsent_previews()
        coordinator.report_status.remote(self.name, self.status(), previews)

    def stop(self) -> None:
        self._stop.set()

    def _drop_streams(self) -> None:
        """After a failed run: hold nothing of any stream, as a new process would, so that the
        next run recovers them all from their checkpoints and reads their later records
        again. Checkpoints already handed to the writer were snapshotted between steps: they
        are written first (a failed run's writer must not write after the next run's), then
        a new writer starts without the failed run's partitions."""
        while not self.writer.close():
            log.warning("worker %s: waiting for its checkpoint writer to finish", self.name)
        for sid in [*self.processor.stream_ids(), *self.book.records]:
            self._forget(sid)
        self.book.clear()
        self.page_ins.clear()
        self.positions.clear()
        self.partition_lag.clear()
        self.writer = self._new_writer()
        # As a new process would: a producer the brokers failed for good (one whose producer
        # id a restarted broker forgot) sends nothing again.
        kafka.close_now(self.producer)
        self.producer = self.sinks.sinks["kafka"].producer = self._new_producer()

    def inject_fault(self, kind: Literal["raise", "stall"], seconds: float = 0.0) -> None:
        """For drills and tests: the loop's next pass raises :class:`InjectedFault`, as a bug
        would (``raise``), or sleeps ``seconds`` without a heartbeat, as a call that hangs
        would (``stall``)."""
        self._fault = (kind, seconds)

    def _take_fault(self) -> None:
        fault, self._fault = self._fault, None
        if fault is None:
            return
        kind, seconds = fault
        if kind == "raise":
            raise InjectedFault(f"worker {self.name}: a fault injected by inject_fault")
        time.sleep(seconds)

    def alive(self) -> bool:
        return True

    def pid(self) -> int:
        """The worker's process id (operators and failover tests signal it)."""
        return os.getpid()

    def status(self) -> WorkerStatus:
        """The worker and each stream it segmented or holds, now (safe from other threads:
        it reads copies)."""
        paging = self.processor.states
        streams = {}
        for sid, rec in sorted(list(self.book.records.items())):
            st = rec.stats
            if not (st.frames or st.skipped or st.ended):
                continue
            in_memory = self.processor.holds(sid)
            queued, lag_s = self.processor.lag(sid)
            streams[sid] = StreamStatus(
                stream_id=sid,
                worker=self.name,
                frames_in=st.frames + st.skipped + queued,
                frames_out=st.frames,
                skipped=st.skipped,
                lag_frames=queued,
                lag_s=round(lag_s, 3),
                fps=round(st.fps, 2),
                residence=self.processor.states.tier(sid) if in_memory else rec.place,
                active_tracks=st.active_tracks,
                tracks=st.tracks,
                gaps=self.processor.gaps(sid) if in_memory else st.gaps,
                ended=st.ended,
                last_checkpoint_frame=st.last_checkpoint,
                resumed_at=st.resumed_at,
            )
        return WorkerStatus(
            name=self.name,
            model_version=self.model_version,
            partitions=list(self.partitions),
            partition_lag=dict(self.partition_lag),
            dead_letters=self.dead_letters,
            checkpoints_written=self.writer.written,
            recovered_streams=self.recovered_streams,
            resident_streams=paging.resident_count,
            host_streams=paging.host_count,
            stored_streams=self.book.stored_count(),
            host_state_bytes=paging.host_bytes,
            page_outs=paging.stats.page_outs,
            page_ins=paging.stats.page_ins,
            store_page_ins=self.store_page_ins,
            store_errors=self.store_health.errors,
            store_outage_s=round(self.store_health.outage_s, 3),
            broker_errors=self.broker_health.errors,
            broker_outage_s=round(self.broker_health.outage_s, 3),
            run_seconds=round(self.run_seconds, 3),
            step_seconds=round(self.processor.step_seconds, 3),
            cpu_seconds=round(self.cpu_seconds, 3),
            rss_bytes=rss_bytes(),
            peak_rss_bytes=peak_rss_bytes(),
            step_latency=self.processor.step_latency.copy(),
            batch_size=self.processor.batch_size.copy(),
            streams=streams,
        )


# Concurrent calls: ``run`` holds one thread; ``status``, ``stop``, ``acquire`` and
# ``release`` (from the coordinator and drivers) use the others.
SegmentationWorkerActor = ray.remote(max_concurrency=4)(SegmentationWorker)


def start_worker(
    cfg: PipelineConfig,
    bootstrap: str,
    partitions: list[int],
    coordinator: str | None = None,
    name: str | None = None,
) -> ray.actor.ActorHandle:
    """A worker actor reserving ``worker.cpus`` cores (and ``worker.gpus`` GPUs), consuming
    ``partitions``.

    Ray restarts it after a crash (``worker.max_restarts``; unset = always) and retries its
    running ``run`` on the new process, which recovers from the checkpoints; so a pool's run
    does not end because a worker died."""
    restarts = cfg.worker.max_restarts
    return SegmentationWorkerActor.options(
        num_cpus=cfg.worker.cpus,
        num_gpus=cfg.worker.gpus,
        max_restarts=-1 if restarts is None else restarts,
        max_task_retries=-1 if restarts is None else restarts,
    ).remote(cfg, bootstrap, partitions, coordinator, name)
