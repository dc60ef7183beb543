"""Runs the model over many streams: the worker's logic, free of Kafka and Ray.

Records go in with :meth:`StreamProcessor.on_record` in topic order; :meth:`step_ready` then
takes the next frame of every stream that has one queued and steps them as one batch
(continuous batching, as LLM servers do), applying each stream's prompts right before the
frame they name, and hands every frame's tracks to the sinks.

Per stream the processor keeps the model state, the next frame index it expects and the
queue of received frames. Chunks that repeat frames already processed (a replay) are
trimmed; a gap in frame indexes is logged and counted, and the stream goes on from the new
index. A prompt without a frame index applies to the frame after the last one received
before it, so its effect does not depend on how fast the worker runs. A prompt that cannot
apply (an empty mask, more objects than the ID buffer holds) is handed to ``on_rejected``
with the reason, which the worker sends to the dead-letter topic.

States live in :class:`~.residency.StateResidency`: with ``resident_streams`` set, a batch
holds at most that many streams, the others' states are paged to host memory, and the next
batch's are paged in while this one steps. With ``max_lag_s`` set (``worker.lag_policy:
skip_to_live``), a stream further behind its newest received frame than that skips to it;
the skipped frames are emitted as ``FrameTracks.skipped`` for the frames table.

Recovery: every record comes with its offset in its partition, and :meth:`snapshot` of a
stream says where to resume reading it: the offset of the record that delivered its oldest
queued frame, or, with nothing queued, the partition position after the last record read.
The snapshot holds exactly what came from records before that offset and is not yet in the
model state: prompts still waiting for their frame, and the end of the stream once every
frame before it was stepped. Frames and prompts from later records are read again after a
:meth:`restore`, and the worker skips the stream's records before the snapshot's offset.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import torch

from ausm_stream.errors import InvalidInputError, RecordError
from ausm_stream.model import AUSM, StreamState
from ausm_stream.model.prompts import prompt_problem
from ausm_stream.model.tracking import results_to_host
from ausm_stream.operators.residency import StateResidency
from ausm_stream.operators.status import STEP_SECONDS_BUCKETS, Histogram, batch_buckets
from ausm_stream.pipeline.geometry import Placement
from ausm_stream.pipeline.records import ControlRecord, FrameChunk, PromptRecord, Record
from ausm_stream.pipeline.tracks import FrameTracks

log = logging.getLogger(__name__)

MAX_FRAME_JUMP = 1 << 30
"""Frames a chunk or prompt may lie past the last frame its stream received. Gaps happen (a
chunk dead-lettered; records Kafka's retention deleted while the stream was stored away, a
week of a 240 fps camera is 145 million frames), but a chunk far ahead would make every later
frame look like a replay and silence the stream until a reset: it is refused instead. A
stream's first record may start at any index the decoder allows (``MAX_FRAME_INDEX``)."""


@dataclass
class QueuedFrame:
    frame_idx: int
    pts_ns: int
    capture_ts: int
    placement: Placement
    """Where the source frame lies on ``rgb`` (letterbox bands are cut off the masks)."""
    rgb: np.ndarray
    offset: int = -1
    """Offset of the record that delivered the frame (its partition's)."""
    after_gap: bool = False
    """Frames before this one never arrived (counted in ``StreamEntry.gaps``)."""


@dataclass
class QueuedPrompt:
    prompt: PromptRecord
    offset: int = -1


@dataclass
class StreamEntry:
    """What the processor keeps for one stream (its model state lives in
    :class:`~.residency.StateResidency`)."""

    next_frame: int = 0
    """Index of the next frame to step (everything before it has been emitted)."""
    received: int = 0
    """One past the last frame index received."""
    queue: deque[QueuedFrame] = field(default_factory=deque)
    prompts: dict[int, list[QueuedPrompt]] = field(default_factory=dict)
    ended_at: int | None = None
    frames_done: int = 0
    skipped: int = 0
    """Frames skipped to catch up (``max_lag_s``), recorded as skipped, never stepped."""
    gaps: int = 0
    closed: bool = False

    @property
    def lag_frames(self) -> int:
        """Frames received and not yet stepped."""
        return len(self.queue)

    @property
    def lag_s(self) -> float:
        """Capture time from the next frame to step to the newest frame received."""
        if not self.queue:
            return 0.0
        return (self.queue[-1].capture_ts - self.queue[0].capture_ts) / 1e9

    @property
    def finished(self) -> bool:
        # Records keep their order in the topic: once the end has arrived, every frame before
        # it has too, or never will (a dead-lettered chunk).
        return self.ended_at is not None and not self.queue


@dataclass
class StreamSnapshot:
    """Everything the processor needs to resume one stream exactly (see the module doc)."""

    stream_id: str
    state: StreamState
    offset: int
    """Read the stream's records from this offset of its partition on."""
    next_frame: int
    frames_done: int
    skipped: int
    gaps: int
    ended: bool
    prompts: list[tuple[int, PromptRecord]]
    """(frame it applies at, prompt), for prompts from records before ``offset``."""


def stream_seed(base: int, stream_id: str) -> int:
    """A stream's ID-sampler seed: stable across processes, so replays reproduce track ids."""
    return (base * 1_000_003 + zlib.crc32(stream_id.encode())) & 0x7FFFFFFF


class StreamProcessor:
    def __init__(
        self,
        model: AUSM,
        emit: Callable[[FrameTracks], None],
        seed: int = 0,
        max_batch: int = 16,
        on_end: Callable[[str], None] | None = None,
        on_rejected: Callable[[PromptRecord, str], None] | None = None,
        resident_streams: int | None = None,
        host_state_bytes: int | None = None,
        max_lag_s: float | None = None,
    ) -> None:
        self.model = model
        self.emit = emit
        self.seed = seed
        # A batch steps resident states only, so it holds at most ``resident_streams``.
        self.max_batch = min(max_batch, resident_streams or max_batch)
        self.states = StateResidency(model.cfg, model.device, resident_streams, host_state_bytes)
        self.max_lag_s = max_lag_s
        self.on_end = on_end
        self.on_rejected = on_rejected
        self.streams: dict[str, StreamEntry] = {}
        self.size = model.cfg.image_size
        self.step_seconds = 0.0  # wall time in the model's step: how busy the model was
        self.step_latency = Histogram(STEP_SECONDS_BUCKETS)
        self.batch_size = Histogram(batch_buckets(self.max_batch))

    def entry(self, stream_id: str) -> StreamEntry:
        if stream_id not in self.streams:
            self._start(stream_id)
        return self.streams[stream_id]

    def _start(self, stream_id: str, next_track_id: int = 1) -> StreamEntry:
        """A new stream: an empty entry and a fresh state."""
        state = self.model.init_state(stream_seed(self.seed, stream_id))
        state.next_track_id = next_track_id
        self.streams[stream_id] = entry = StreamEntry()
        self.states.put(stream_id, state)
        return entry

    # -- input -------------------------------------------------------------------------------
    def on_record(self, record: Record, offset: int = -1) -> None:
        """Queue a validated record read at ``offset`` of its partition; raises
        :class:`RecordError` for ones that cannot apply."""
        if isinstance(record, FrameChunk):
            self._on_frames(record, offset)
        elif isinstance(record, PromptRecord):
            self._on_prompt(record, offset)
        elif record.kind == "end":
            self._on_end(record)
        else:  # reset
            self._on_reset(record)

    def _on_end(self, record: ControlRecord) -> None:
        s = self.entry(record.stream_id)
        if record.frame_idx > s.received:
            s.gaps += 1
            log.warning(
                "stream %s ended at frame %d: frames %d-%d never arrived",
                record.stream_id,
                record.frame_idx,
                s.received,
                record.frame_idx - 1,
            )
        s.ended_at = record.frame_idx
        self._finish_if_done(record.stream_id)

    def _on_frames(self, chunk: FrameChunk, offset: int) -> None:
        if chunk.frames.shape[1:3] != self.size:
            raise RecordError(
                f"frames of {chunk.stream_id!r} at frame {chunk.first} are "
                f"{chunk.frames.shape[1]}x{chunk.frames.shape[2]}, the model "
                f"takes {self.size[0]}x{self.size[1]}"
            )
        s = self.entry(chunk.stream_id)
        self._check_jump(s, chunk.first, f"frames of {chunk.stream_id!r} at frame {chunk.first}")
        placement = chunk.placement
        for i, idx in enumerate(chunk.frame_idx.tolist()):
            if idx < s.received:
                continue  # already received (a replayed chunk): processed once only
            gap = idx > s.received
            if gap:
                s.gaps += 1
                log.warning(
                    "stream %s: frames %d-%d never arrived; continuing at %d",
                    chunk.stream_id,
                    s.received,
                    idx - 1,
                    idx,
                )
                if not s.queue and s.next_frame == s.received:
                    s.next_frame = idx
            s.queue.append(
                QueuedFrame(
                    idx,
                    int(chunk.pts_ns[i]),
                    int(chunk.capture_ts[i]),
                    placement,
                    chunk.frames[i],
                    offset,
                    gap,
                )
            )
            s.received = idx + 1

    def _on_prompt(self, prompt: PromptRecord, offset: int) -> None:
        sid = prompt.stream_id
        problem = prompt_problem(prompt.masks, prompt.object_ids, self.size, self.model.cfg.n_id)
        if problem is not None:
            raise RecordError(f"prompt for {sid!r}: {problem}")
        s = self.entry(sid)
        at = s.received if prompt.frame_idx is None else prompt.frame_idx
        self._check_jump(s, at, f"prompt for {sid!r} names frame {at}, which would")
        if at < s.next_frame:
            raise RecordError(
                f"prompt for {sid!r} names frame {at}, which was "
                f"already processed (next is {s.next_frame})"
            )
        s.prompts.setdefault(at, []).append(QueuedPrompt(prompt, offset))

    @staticmethod
    def _check_jump(s: StreamEntry, frame_idx: int, what: str) -> None:
        """Refuse a frame more than ``MAX_FRAME_JUMP`` past the last one the stream received
        (a stream that received none may start anywhere)."""
        last = s.received - 1
        if s.received and frame_idx - last > MAX_FRAME_JUMP:
            raise RecordError(
                f"{what} jump {frame_idx - last} frames past frame {last}, the last one received "
                f"(at most {MAX_FRAME_JUMP}, MAX_FRAME_JUMP); reset the stream to renumber it"
            )

    def _on_reset(self, record: ControlRecord) -> None:
        """The stream starts over at the record's frame, from a fresh state; its track ids go
        on after the old state's (a stream's track ids are never reused)."""
        sid = record.stream_id
        old = self.streams.pop(sid, None)
        next_track_id = 1
        if old is not None:
            next_track_id = self.states.copy(sid).next_track_id
            self.states.drop(sid)
            log.info("stream %s reset at frame %d", sid, record.frame_idx)
        s = self._start(sid, next_track_id)
        s.next_frame = s.received = record.frame_idx

    # -- stepping ----------------------------------------------------------------------------
    def ready(self, stepping: Collection[str] = ()) -> list[str]:
        """Up to ``max_batch`` streams with a queued frame, least recently stepped first
        (round robin): with more ready streams than ``max_batch``, every one is stepped
        within ceil(ready / max_batch) steps. Which streams share a batch never changes their
        outputs (the step is batch-invariant). Those ``stepping`` now are left out: what
        follows them is the next batch."""
        return [sid for sid, s in self.streams.items() if s.queue and sid not in stepping][
            : self.max_batch
        ]

    def step_ready(self) -> int:
        """Step the next frame of up to ``max_batch`` streams as one batch; frames stepped."""
        ids = self.ready()
        if not ids:
            return 0
        entries = [self.streams[sid] for sid in ids]
        if self.max_lag_s is not None:
            for sid, s in zip(ids, entries, strict=True):
                self._catch_up(sid, s, self.max_lag_s)
        states = self.states.batch(ids)
        # The next batch (the round robin's next ready streams) pages in while this one steps.
        self.states.prefetch(self.ready(stepping=set(ids)))
        heads = [s.queue.popleft() for s in entries]
        for s, state, head in zip(entries, states, heads, strict=True):
            for queued in s.prompts.pop(head.frame_idx, []):
                self._apply_prompt(state, queued.prompt, head.frame_idx)
        frames = torch.from_numpy(np.stack([h.rgb for h in heads]))
        started = time.perf_counter()
        results = results_to_host(self.model.step(states, frames))  # one copy
        took = time.perf_counter() - started
        self.step_seconds += took
        self.step_latency.observe(took)
        self.batch_size.observe(len(ids))
        names = self.model.cfg.class_names
        for sid, s, head, r in zip(ids, entries, heads, results, strict=True):
            place = head.placement
            masks = place.crop(r.masks.numpy())
            seen = masks.any(axis=(1, 2))  # a track only in the letterbox bands is not written
            self.emit(
                FrameTracks(
                    stream_id=sid,
                    frame_idx=head.frame_idx,
                    pts_ns=head.pts_ns,
                    capture_ts=head.capture_ts,
                    source_height=place.source[0],
                    source_width=place.source[1],
                    track_ids=r.track_ids.numpy()[seen],
                    labels=[names[i] for i in r.labels.numpy()[seen].tolist()],
                    scores=r.scores.numpy()[seen],
                    masks=masks[seen],
                    prompt_object_ids=r.prompt_object_ids.numpy()[seen],
                    image=place.crop(head.rgb[None])[0],
                )
            )
            s.next_frame = head.frame_idx + 1
            s.frames_done += 1
            self.streams[sid] = self.streams.pop(sid)  # to the back of the round robin
            self._finish_if_done(sid)
        return len(ids)

    def _catch_up(self, stream_id: str, s: StreamEntry, max_lag_s: float) -> None:
        """``skip_to_live``: a stream more than ``max_lag_s`` behind its newest received frame
        skips to it. The skipped frames go to the sinks as skipped (the frames table records
        them); prompts that named them apply at the newest frame; the state continues from
        there, as across a gap."""
        if s.lag_s <= max_lag_s:
            return
        live, behind = s.queue[-1].frame_idx, s.lag_s
        skipped = 0
        while len(s.queue) > 1:
            f = s.queue.popleft()
            if f.frame_idx in s.prompts:
                s.prompts.setdefault(live, [])[:0] = s.prompts.pop(f.frame_idx)
            self.emit(
                FrameTracks.skipped_frame(
                    stream_id,
                    f.frame_idx,
                    f.pts_ns,
                    f.capture_ts,
                    *f.placement.source,
                    (f.placement.height, f.placement.width),
                )
            )
            s.next_frame = f.frame_idx + 1
            skipped += 1
        s.skipped += skipped
        log.warning(
            "stream %s was %.1f s behind (worker.max_lag_s %.1f): skipped %d frames to frame %d",
            stream_id,
            behind,
            max_lag_s,
            skipped,
            live,
        )

    def _apply_prompt(self, state: StreamState, prompt: PromptRecord, frame_idx: int) -> None:
        try:
            self.model.add_prompt(state, torch.from_numpy(prompt.masks), prompt.object_ids)
        except InvalidInputError as exc:
            reason = f"prompt for {prompt.stream_id!r} at frame {frame_idx} rejected: {exc}"
            log.error("%s", reason)
            if self.on_rejected is not None:
                self.on_rejected(prompt, reason)

    # -- recovery ----------------------------------------------------------------------------
    def snapshot(self, stream_id: str, position: int) -> StreamSnapshot:
        """The stream as of now, to resume from; ``position`` is its partition's offset
        after the last record read (where to resume when nothing of it is queued)."""
        s = self.streams[stream_id]
        offset = s.queue[0].offset if s.queue else position
        return StreamSnapshot(
            stream_id=stream_id,
            state=self.states.copy(stream_id),
            offset=offset,
            next_frame=s.next_frame,
            frames_done=s.frames_done,
            skipped=s.skipped,
            gaps=s.gaps - sum(q.after_gap for q in s.queue),
            ended=s.finished,
            prompts=[
                (at, q.prompt)
                for at, queued in sorted(s.prompts.items())
                for q in queued
                if q.offset < offset
            ],
        )

    def restore(self, snap: StreamSnapshot) -> None:
        """Resume a stream from :meth:`snapshot` (its later records are read again)."""
        s = StreamEntry(
            next_frame=snap.next_frame,
            received=snap.next_frame,
            frames_done=snap.frames_done,
            skipped=snap.skipped,
            gaps=snap.gaps,
        )
        for at, prompt in snap.prompts:
            s.prompts.setdefault(at, []).append(QueuedPrompt(prompt))
        if snap.ended:
            s.ended_at = snap.next_frame
            s.closed = True  # its end was handled (sinks flushed) before the snapshot
        self.streams[snap.stream_id] = s
        self.states.put(snap.stream_id, snap.state)

    def forget(self, stream_id: str) -> None:
        """Drop a stream (its partition moved to another worker, or it left memory)."""
        self.streams.pop(stream_id, None)
        self.states.drop(stream_id)

    # -- queries: what the worker asks about its streams ------------------------------------
    def holds(self, stream_id: str) -> bool:
        """The stream is in memory (an entry and a model state)."""
        return stream_id in self.streams

    def stream_ids(self) -> list[str]:
        return list(self.streams)

    def is_closed(self, stream_id: str) -> bool:
        """Its end was handled (sinks flushed): nothing more will be stepped."""
        entry = self.streams.get(stream_id)
        return entry is not None and entry.closed

    def is_quiet(self, stream_id: str) -> bool:
        """In memory with nothing queued and not ended: a checkpoint taken now holds all of
        it, so it may leave memory."""
        entry = self.streams.get(stream_id)
        return entry is not None and not entry.queue and not entry.closed

    def has_queued(self, stream_id: str) -> bool:
        entry = self.streams.get(stream_id)
        return entry is not None and bool(entry.queue)

    def gaps(self, stream_id: str) -> int:
        """Runs of frames of the stream that never arrived (0 when not in memory)."""
        entry = self.streams.get(stream_id)
        return entry.gaps if entry is not None else 0

    def lag(self, stream_id: str) -> tuple[int, float]:
        """Frames queued and their capture-time span in seconds (0 when not in memory)."""
        entry = self.streams.get(stream_id)
        return (entry.lag_frames, entry.lag_s) if entry is not None else (0, 0.0)

    def furthest_behind(self, n: int) -> list[tuple[str, int, float]]:
        """The ``n`` streams with frames queued furthest behind: (id, frames, seconds)."""
        behind = [(e.lag_s, e.lag_frames, sid) for sid, e in list(self.streams.items()) if e.queue]
        return [(sid, frames, lag) for lag, frames, sid in sorted(behind, reverse=True)[:n]]

    def backlog(self) -> int:
        """Frames received and not yet stepped, over all streams."""
        return sum(len(s.queue) for s in self.streams.values())

    def drain(self) -> int:
        total = 0
        while n := self.step_ready():
            total += n
        return total

    def _finish_if_done(self, stream_id: str) -> None:
        s = self.streams[stream_id]
        if s.finished and not s.closed:
            s.closed = True
            if self.on_end is not None:
                self.on_end(stream_id)
