"""Where mask tracks go: the ``ausm.tracks`` topic and a Parquet dataset on object storage.

The Parquet layout, and how readers open it, is in :mod:`.dataset`. ``frames`` records
every processed frame, with or without tracks, so "was frame k processed, exactly once?"
has an answer. A file covers the frames of one window of ``parquet_frames``
(frame_idx // parquet_frames), or the stream's last partial window, and is named by that
range (zero-padded): a replay after a failure rewrites the same files with the same bytes
instead of adding duplicates. ``date`` is the UTC date of the window's first frame.

A window is written only when it is complete: when its last frame arrives, a later window
starts (after a gap) or the stream ends, never because the worker stops. What a sink still
buffers travels in the stream's checkpoint instead (:meth:`WindowedSink.pending`,
:meth:`WindowedSink.restore`), so a stream stopped mid-window and resumed elsewhere writes
the same files, and the same tracks messages, as one that never stopped.

A window leaves its sink's buffer only once it is written. A write the object store fails
(:func:`~.storage.is_store_error`) keeps the window, in order, among the stream's *owed*
windows, and is tried again after a back-off (:meth:`WindowedSink.retry`, which the worker
calls every pass, and any later write); nothing is dropped however long the store is out.
While a stream owes a window, :meth:`WindowedSink.pending` refuses: a checkpoint covers a
window's frames only after its Parquet file is written (the commit order,
:mod:`ausm_stream.operators.checkpoint`).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from ausm_stream.pipeline import kafka
from ausm_stream.pipeline.ids import check_stream_id
from ausm_stream.pipeline.records import to_ipc
from ausm_stream.pipeline.storage import Backoff, ObjectStore, ServiceHealth, is_store_error
from ausm_stream.pipeline.tracks import (
    TRACKS_SCHEMA,
    FrameInfo,
    FrameTracks,
    encode_tracks,
    frames_table,
    track_headers,
)

log = logging.getLogger(__name__)


def part_name(first: int, last: int) -> str:
    return f"part-{first:012d}-{last:012d}.parquet"


Buffered = list[tuple[FrameInfo, pa.RecordBatch]]


class WindowedSink(ABC):
    """Buffers each stream's frames by window (``frame_idx // window``) and writes a window
    when its last frame arrives, a later window starts (after a gap) or the stream ends.

    A window whose write fails with an outage error (:meth:`_is_outage`: the store or the
    broker away, not a bug) stays owed (:attr:`owed`) and is written, before any later one of
    its stream, once ``backoff`` allows another try."""

    def __init__(
        self, window: int, backoff: Backoff | None = None, health: ServiceHealth | None = None
    ) -> None:
        self.window = window
        self.buffers: dict[str, Buffered] = defaultdict(list)
        self.owed: dict[str, list[Buffered]] = {}
        """Per stream, complete windows not written yet (the store failed them), oldest first."""
        self.backoff = backoff or Backoff()
        self.health = health or ServiceHealth()

    def add(self, frame: FrameTracks, rows: pa.RecordBatch) -> None:
        """Buffer one frame and its track rows (:func:`~.tracks.encode_tracks`)."""
        info = FrameInfo.of(frame)
        buf = self.buffers[frame.stream_id]
        if buf and frame.frame_idx // self.window != buf[0][0].frame_idx // self.window:
            self._write_pending(frame.stream_id)
        self.buffers[frame.stream_id].append((info, rows))
        if (frame.frame_idx + 1) % self.window == 0:
            self._write_pending(frame.stream_id)

    def end(self, stream_id: str) -> None:
        """The stream ended: write its last, partial window."""
        self._write_pending(stream_id)

    def pending(self, stream_id: str) -> tuple[pa.Table, pa.Table]:
        """The stream's buffered frames (``FRAME_INFO_SCHEMA``) and their track rows: what a
        checkpoint carries so that the window is written whole after a restart.

        ``RuntimeError`` while the stream owes a window: a checkpoint must not cover frames
        whose window is not written (the worker checks :meth:`owes` first)."""
        if self.owes(stream_id):
            raise RuntimeError(
                f"stream {stream_id!r} has window(s) not written yet: no checkpoint may "
                "cover them before they are (commit order)"
            )
        buf = self.buffers.get(stream_id, [])
        infos = frames_table([i for i, _ in buf])
        return infos, pa.Table.from_batches([r for _, r in buf], schema=TRACKS_SCHEMA)

    def restore(self, stream_id: str, infos: pa.Table, rows: pa.Table) -> None:
        """Buffer what :meth:`pending` returned (replacing anything buffered for the stream)."""
        self.buffers.pop(stream_id, None)
        frame_of_row = rows.column("frame_idx").to_numpy()
        columns = [
            infos.column(name).cast(pa.int64()).to_numpy()
            for name in ("frame_idx", "pts_ns", "capture_ts", "tracks")
        ]
        skipped = infos.column("skipped").to_pylist()
        for frame_idx, pts_ns, capture_ts, tracks, skip in zip(*columns, skipped, strict=True):
            info = FrameInfo(
                stream_id, int(frame_idx), int(pts_ns), int(capture_ts), int(tracks), bool(skip)
            )
            part = rows.take((frame_of_row == info.frame_idx).nonzero()[0]).combine_chunks()
            batches = part.to_batches()
            batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=TRACKS_SCHEMA)
            self.buffers[stream_id].append((info, batch))

    def forget(self, stream_id: str) -> None:
        """Drop what is buffered for a stream (it moved; its checkpoint carries it, and owed
        windows come again from the replay after that checkpoint)."""
        self.buffers.pop(stream_id, None)
        self.owed.pop(stream_id, None)

    def owes(self, stream_id: str) -> bool:
        """Whether a complete window of the stream is still to be written."""
        return bool(self.owed.get(stream_id))

    def retry(self) -> bool:
        """Write owed windows if the back-off allows a try now; whether none is left owed."""
        for stream_id in sorted(self.owed):
            if not self._write_owed(stream_id):
                break
        return not self.owed

    def _write_pending(self, stream_id: str) -> None:
        buffered = self.buffers.pop(stream_id, [])
        if buffered:
            self.owed.setdefault(stream_id, []).append(buffered)
            self._write_owed(stream_id)

    def _write_owed(self, stream_id: str) -> bool:
        """Write the stream's owed windows in order while the store takes them; whether all
        are written. Without a try (the back-off is not over), they stay owed."""
        windows = self.owed.get(stream_id)
        while windows:
            if not self.backoff.ready():
                return False
            try:
                self._write(stream_id, windows[0])
            except Exception as exc:
                if not self._is_outage(exc):  # a bug: dropped, the caller's run fails and
                    windows.pop(0)  # the replay from the last checkpoint writes it again
                    if not windows:
                        del self.owed[stream_id]
                    raise
                first = windows[0][0][0].frame_idx
                self.health.failed(
                    f"writing {stream_id} frames {first}-{windows[0][-1][0].frame_idx}",
                    exc,
                    self.backoff.failed(),
                )
                return False
            windows.pop(0)
            self._wrote()
        self.owed.pop(stream_id, None)
        return True

    def _wrote(self) -> None:
        """A write succeeded: the service answers."""
        self.backoff.succeeded()
        self.health.ok()

    @abstractmethod
    def _write(self, stream_id: str, buffered: Buffered) -> None:
        """Write one window of one stream's frames."""

    def _is_outage(self, exc: BaseException) -> bool:
        """Whether a failed write is worth trying again (the service is away)."""
        return is_store_error(exc)


class ParquetSink(WindowedSink):
    def __init__(
        self,
        store: ObjectStore,
        model_version: str,
        parquet_frames: int,
        backoff: Backoff | None = None,
        health: ServiceHealth | None = None,
    ) -> None:
        super().__init__(parquet_frames, backoff, health)
        self.fs, self.base = store.arrow_fs()
        self.model_version = model_version
        self.files_written = 0

    def _write(self, stream_id: str, buffered: Buffered) -> None:
        frames = [f for f, _ in buffered]
        first, last = frames[0].frame_idx, frames[-1].frame_idx
        day = datetime.fromtimestamp(frames[0].capture_ts / 1e9, tz=timezone.utc).date()
        folder = f"stream_id={check_stream_id(stream_id)}"  # an id names no other folder
        rel = f"{folder}/date={day.isoformat()}/{part_name(first, last)}"
        tracks = pa.Table.from_batches([rows for _, rows in buffered], schema=TRACKS_SCHEMA)
        summary = frames_table(frames, self.model_version)
        for table_name, table in (("tracks", tracks), ("frames", summary)):
            table = table.drop_columns(["stream_id"])  # hive: partition columns live in the path
            path = f"{self.base}/{table_name}/{rel}"
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            pq.write_table(table, path, filesystem=self.fs, compression="zstd")
        self.files_written += 1
        log.debug("wrote %s frames %d-%d", stream_id, first, last)


class KafkaTrackSink(WindowedSink):
    """Track rows to the tracks topic, keyed by stream id: one Arrow IPC message per stream
    and window of ``window`` frames (the worker passes the ingest chunk size), for windows
    that have tracks.

    The topic is at-least-once: a stream replayed after a failure sends its windows since
    the last checkpoint again, with the same bytes. Every message carries headers that
    identify it (``ausm-stream``, ``ausm-first-frame``, ``ausm-last-frame``,
    ``ausm-model-version``), by which a consumer drops the repeats
    (:func:`~ausm_stream.pipeline.tracks.track_message_id`).

    Why windows: kafka-python spends 0.2-0.3 ms of Python per send (measured), holding the
    GIL the model's lanes need; one message per input chunk cuts that per frame to 85 us,
    and adds no wait the chunking does not already impose (frames reach the worker a chunk
    at a time).
    Uncompressed: a frame's few rows are ~2.5 KB, which zstd makes *larger* (per-buffer
    framing) at 0.35 ms of worker CPU per frame. Frame chunks, which are large, stay zstd as
    the record spec says.

    **Delivery.** A window sent is owed (:meth:`owes`) until the broker has acknowledged it,
    so no checkpoint covers tracks that were never delivered (the commit order). The producer
    retries through a broker outage by itself (``kafka.delivery_timeout_s``); a window it
    gives up, or one it could not even take (its buffer full), is sent again after the
    back-off, and the outage shows in ``health``.
    """

    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        window: int,
        model_version: str,
        backoff: Backoff | None = None,
        health: ServiceHealth | None = None,
    ) -> None:
        super().__init__(window, backoff, health or ServiceHealth("Kafka brokers"))
        self.producer = producer
        self.topic = topic
        self.model_version = model_version
        self.in_flight: dict[str, list[tuple[Buffered, FutureRecordMetadata, float]]] = {}
        """Per stream, windows sent and not yet acknowledged (and when), oldest first."""
        self._stalled = False  # reported that acknowledgements stopped

    def _write(self, stream_id: str, buffered: Buffered) -> None:
        rows = pa.concat_batches([r for _, r in buffered])
        if rows.num_rows:
            first, last = buffered[0][0].frame_idx, buffered[-1][0].frame_idx
            headers = track_headers(stream_id, first, last, self.model_version)
            sent = kafka.send(
                self.producer,
                self.topic,
                stream_id,
                to_ipc(rows, None),
                "tracks",
                extra_headers=headers,
            )
            self.in_flight.setdefault(stream_id, []).append((buffered, sent, time.monotonic()))

    def _is_outage(self, exc: BaseException) -> bool:
        return isinstance(exc, KafkaError) and exc.retriable  # not, e.g., a record too large

    def _wrote(self) -> None:
        """The producer took the window; the brokers answer only when they acknowledge it."""
        self.backoff.succeeded()

    def owes(self, stream_id: str) -> bool:
        """Also while a window sent is not yet acknowledged (:meth:`retry` looks)."""
        return super().owes(stream_id) or bool(self.in_flight.get(stream_id))

    def retry(self) -> bool:
        self._settle()
        return super().retry() and not self.in_flight

    def forget(self, stream_id: str) -> None:
        super().forget(stream_id)
        self.in_flight.pop(stream_id, None)

    def _settle(self) -> None:
        """Drop the acknowledged windows; those the producer gave up become owed again, in
        frame order with the stream's other owed windows. Windows waiting longer than
        ``kafka.ACK_STALL_S`` are reported once as an outage (the producer keeps trying)."""
        now, oldest = time.monotonic(), None
        for stream_id in list(self.in_flight):
            waiting = []
            for buffered, sent, at in self.in_flight[stream_id]:
                if not sent.is_done:
                    waiting.append((buffered, sent, at))
                    oldest = at if oldest is None else min(oldest, at)
                elif sent.failed():
                    if not self._is_outage(sent.exception):
                        raise sent.exception
                    owed = self.owed.setdefault(stream_id, [])
                    owed.append(buffered)
                    owed.sort(key=lambda window: window[0][0].frame_idx)
                    first, last = buffered[0][0].frame_idx, buffered[-1][0].frame_idx
                    what = f"delivering {stream_id} tracks of frames {first}-{last}"
                    self.health.failed(what, sent.exception, self.backoff.failed())
                else:
                    self._stalled = False
                    self.health.ok()
            if waiting:
                self.in_flight[stream_id] = waiting
            else:
                del self.in_flight[stream_id]
        if oldest is not None and now - oldest > kafka.ACK_STALL_S and not self._stalled:
            self._stalled = True
            stall = TimeoutError(f"no acknowledgement for {now - oldest:.0f} s")
            self.health.failed("delivering tracks", stall, kafka.ACK_STALL_S, since=oldest)


class TrackSinks:
    """A worker's sinks, fed one frame at a time: each frame is encoded once
    (:func:`~.tracks.encode_tracks`) and the rows go to every sink in turn.

    Sinks are named (``parquet``, ``kafka``): a checkpoint carries each one's buffer under its
    name (:meth:`pending`, :meth:`restore`)."""

    def __init__(self, model_version: str, **sinks: WindowedSink) -> None:
        self.model_version = model_version
        self.sinks = sinks

    def add(self, frame: FrameTracks) -> pa.RecordBatch:
        """Buffer one frame in every sink; returns its rows."""
        rows = encode_tracks([frame], self.model_version)
        for sink in self.sinks.values():
            sink.add(frame, rows)
        return rows

    def end(self, stream_id: str) -> None:
        for sink in self.sinks.values():
            sink.end(stream_id)

    def forget(self, stream_id: str) -> None:
        for sink in self.sinks.values():
            sink.forget(stream_id)

    def owes(self, stream_id: str) -> bool:
        """Whether a sink still has a complete window of the stream to write."""
        return any(sink.owes(stream_id) for sink in self.sinks.values())

    def retry(self) -> bool:
        """Try the owed windows of every sink again (each after its back-off); whether none
        is left owed."""
        return all([sink.retry() for sink in self.sinks.values()])

    def pending(self, stream_id: str) -> dict[str, tuple[pa.Table, pa.Table]]:
        return {name: sink.pending(stream_id) for name, sink in self.sinks.items()}

    def restore(self, stream_id: str, pending: dict[str, tuple[pa.Table, pa.Table]]) -> None:
        for name, sink in self.sinks.items():
            sink.restore(stream_id, *pending[name])
