"""Where each stream a worker knows stands: one record per stream, one owner of them all.

A stream's life on a worker: it comes into memory (new, restored from a checkpoint after a
failure or a move, or paged back in), is stepped, is checkpointed now and then, and leaves
memory once its last checkpoint is written: paged out to the object store (idle, or beyond
the host budget), or ended. Its records may wait on the worker while its page-in fails.
:class:`StreamBook` holds all of that, so that forgetting a stream (its partition moved) is
one call that cannot miss a piece; the model state and frame queues stay the processor's
(:class:`~.processor.StreamProcessor`).

Per stream, :class:`StreamRecord` holds what the stream *is* (its stats, where it is, where its
checkpoint resumes, when it was last active). What the loop has still *to do* is kept as
queues of stream ids, since the loop walks them every pass: ``due`` (to checkpoint),
``progressed`` (changed since its last checkpoint), ``to_store`` (chosen to page out, its
checkpoint not submitted yet), ``leaving`` (its last checkpoint submitted: it leaves memory once
written), and ``waiting`` (records read while its page-in failed, in order).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from kafka.consumer.fetcher import ConsumerRecord

from ausm_stream.operators.status import Preview, StreamStats

ENDED_STATS_KEPT = 10_000
"""Ended streams whose stats a worker keeps for its status (a few hundred bytes each)."""

Place = Literal["memory", "stored", "ended"]
"""``memory``: the processor holds the stream; ``stored``: paged out (its checkpoint holds
it; its next record pages it back in); ``ended``: it ended and left memory (stats kept)."""


@dataclass
class StreamRecord:
    """A worker's record of one stream."""

    stats: StreamStats = field(default_factory=StreamStats)
    place: Place = "memory"
    resume_offset: int = -1
    """Records of the stream before this offset are covered by the checkpoint it was
    restored from (they are skipped when read again)."""
    last_active: float | None = None
    """When it last had a record or a step (monotonic), while in memory."""


class StreamBook:
    """The streams of one worker: their records and the loop's queues (module docstring)."""

    def __init__(self, preview_streams: int) -> None:
        self.records: dict[str, StreamRecord] = {}
        self.preview_streams = preview_streams
        self.previews: OrderedDict[str, Preview] = OrderedDict()
        """The latest segmented frame of the most recently stepped streams."""
        self._unsent: set[str] = set()  # previews newer than the last push
        self.due: set[str] = set()
        self.progressed: set[str] = set()
        self.to_store: set[str] = set()
        self.leaving: set[str] = set()
        self.waiting: dict[str, list[ConsumerRecord]] = {}
        self._ended: dict[str, None] = {}  # ended and out of memory, oldest first

    def record(self, stream_id: str) -> StreamRecord:
        """The stream's record, a new one for a stream not seen before."""
        rec = self.records.get(stream_id)
        if rec is None:
            rec = self.records[stream_id] = StreamRecord()
        return rec

    def stats(self, stream_id: str) -> StreamStats:
        """The stream's stats to read: blank for a stream not known (and not recorded)."""
        rec = self.records.get(stream_id)
        return rec.stats if rec is not None else StreamStats()

    def active(self, stream_id: str, now: float) -> None:
        """A record arrived for the stream, or it was stepped."""
        self.record(stream_id).last_active = now
        self.progressed.add(stream_id)

    def restored(self, stream_id: str, resume_offset: int, now: float) -> StreamRecord:
        """The stream is in memory again, from a checkpoint resuming at ``resume_offset``."""
        rec = self.record(stream_id)
        rec.place, rec.resume_offset, rec.last_active = "memory", resume_offset, now
        self._ended.pop(stream_id, None)
        return rec

    def paged_in(self, stream_id: str) -> None:
        """The stream is in memory again (new, or from a checkpoint: :meth:`restored`)."""
        if stream_id in self.records:
            self.records[stream_id].place = "memory"
        self._ended.pop(stream_id, None)

    def left_memory(self, stream_id: str, ended: bool) -> None:
        """The stream's last checkpoint is written and memory holds no more of it; the
        oldest ended streams' stats go past :data:`ENDED_STATS_KEPT`."""
        rec = self.record(stream_id)
        rec.place, rec.last_active = ("ended" if ended else "stored"), None
        if ended:
            self._ended[stream_id] = None
        while len(self._ended) > ENDED_STATS_KEPT:
            old = next(iter(self._ended))
            del self._ended[old]
            self.records.pop(old, None)

    def new_life(self, stream_id: str) -> None:
        """The stream was reset (added again after it ended): fresh counters, no preview;
        its track ids go on after the old ones."""
        rec = self.record(stream_id)
        rec.stats = StreamStats(tracks=rec.stats.tracks)
        self.previews.pop(stream_id, None)
        self._unsent.discard(stream_id)

    def keep_preview(self, preview: Preview) -> None:
        """Keep a stream's latest frame, for the ``preview_streams`` most recent streams."""
        if not self.preview_streams:
            return
        self.previews.pop(preview.stream_id, None)
        self.previews[preview.stream_id] = preview
        self._unsent.add(preview.stream_id)
        while len(self.previews) > self.preview_streams:
            gone, _ = self.previews.popitem(last=False)
            self._unsent.discard(gone)

    def unsent_previews(self) -> list[Preview]:
        """The previews kept since the last call (each stream's latest), for the push."""
        fresh = [self.previews[sid] for sid in self._unsent if sid in self.previews]
        self._unsent.clear()
        return fresh

    def stored_count(self) -> int:
        return sum(rec.place == "stored" for rec in list(self.records.values()))

    def forget(self, stream_id: str) -> None:
        """Everything about the stream (its partition moved to another worker)."""
        self.records.pop(stream_id, None)
        self.previews.pop(stream_id, None)
        self._unsent.discard(stream_id)
        self._ended.pop(stream_id, None)
        self.waiting.pop(stream_id, None)
        for queue in (self.due, self.progressed, self.to_store, self.leaving):
            queue.discard(stream_id)

    def clear(self) -> None:
        """Everything about every stream (after a failed run, as a new process would)."""
        for stream_id in list(self.records):
            self.forget(stream_id)
        self.previews.clear()
        self._unsent.clear()
        self.waiting.clear()
        for queue in (self.due, self.progressed, self.to_store, self.leaving):
            queue.clear()
