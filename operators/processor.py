"""Runs the model over many streams: the worker's logic, free of Kafka and Ray.

Records go in with :meth:`StreamProcessor.on_record` in topic order; :meth:`step_ready` then
takes the next frame of every stream that has one queued and steps them as one batch
(continuous batching, as LLM servers do), applying each stream's prompts right before the
frame they name, and hands every frame's tracks to the sinks.

Per stream the processor keeps the model state, the next frame index it expects and the
queue of received frames. Chunks that repeat frames already processed (a replay) are
trimmed; a gap in frame indexes is logged and counted, and the stream goes on from the new
index. A prompt without a frame index applies to the frame after the last one received
before it, so its effect does not depend on how fast the worker runs.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ausm_stream.errors import RecordError
from ausm_stream.model import AUSM, StreamState
from ausm_stream.pipeline.records import (
    ControlRecord,
    FrameChunk,
    FrameTracks,
    PromptRecord,
    Record,
)

log = logging.getLogger(__name__)


@dataclass
class QueuedFrame:
    frame_idx: int
    pts_ns: int
    capture_ts: int
    source_height: int
    source_width: int
    rgb: np.ndarray


@dataclass
class StreamSlot:
    state: StreamState
    next_frame: int = 0
    """Index of the next frame to step (everything before it has been emitted)."""
    received: int = 0
    """One past the last frame index received."""
    queue: deque[QueuedFrame] = field(default_factory=deque)
    prompts: dict[int, list[PromptRecord]] = field(default_factory=dict)
    ended_at: int | None = None
    frames_done: int = 0
    gaps: int = 0
    closed: bool = False

    @property
    def finished(self) -> bool:
        return self.ended_at is not None and not self.queue and self.next_frame >= self.ended_at


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
    ) -> None:
        self.model = model
        self.emit = emit
        self.seed = seed
        self.max_batch = max_batch
        self.on_end = on_end
        self.streams: dict[str, StreamSlot] = {}
        self.size = model.cfg.image_size
        self.step_seconds = 0.0  # wall time in the model's step: how busy the model was

    def slot(self, stream_id: str) -> StreamSlot:
        if stream_id not in self.streams:
            self.streams[stream_id] = StreamSlot(
                self.model.init_state(stream_seed(self.seed, stream_id))
            )
        return self.streams[stream_id]

    # -- input -------------------------------------------------------------------------------
    def on_record(self, record: Record) -> None:
        """Queue a validated record; raises :class:`RecordError` for ones that cannot apply."""
        if isinstance(record, FrameChunk):
            self._on_frames(record)
        elif isinstance(record, PromptRecord):
            self._on_prompt(record)
        elif record.kind == "end":
            self.slot(record.stream_id).ended_at = record.frame_idx
            self._finish_if_done(record.stream_id)
        else:  # reset
            self._on_reset(record)

    def _on_frames(self, chunk: FrameChunk) -> None:
        if chunk.frames.shape[1:3] != self.size:
            raise RecordError(
                f"frames of {chunk.stream_id!r} at frame {chunk.first} are "
                f"{chunk.frames.shape[1]}x{chunk.frames.shape[2]}, the model "
                f"takes {self.size[0]}x{self.size[1]}"
            )
        s = self.slot(chunk.stream_id)
        for i, idx in enumerate(chunk.frame_idx.tolist()):
            if idx < s.received:
                continue  # already received (a replayed chunk): processed once only
            if idx > s.received:
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
                    chunk.source_height,
                    chunk.source_width,
                    chunk.frames[i],
                )
            )
            s.received = idx + 1

    def _on_prompt(self, prompt: PromptRecord) -> None:
        if prompt.masks.shape[1:] != self.size:
            raise RecordError(
                f"prompt for {prompt.stream_id!r}: masks are "
                f"{prompt.masks.shape[1]}x{prompt.masks.shape[2]}, the model "
                f"takes {self.size[0]}x{self.size[1]}"
            )
        s = self.slot(prompt.stream_id)
        at = s.received if prompt.frame_idx is None else prompt.frame_idx
        if at < s.next_frame:
            raise RecordError(
                f"prompt for {prompt.stream_id!r} names frame {at}, which was "
                f"already processed (next is {s.next_frame})"
            )
        s.prompts.setdefault(at, []).append(prompt)

    def _on_reset(self, record: ControlRecord) -> None:
        old = self.streams.pop(record.stream_id, None)
        if old is not None:
            log.info("stream %s reset at frame %d", record.stream_id, record.frame_idx)
        s = self.slot(record.stream_id)
        s.next_frame = s.received = record.frame_idx

    # -- stepping ----------------------------------------------------------------------------
    def ready(self) -> list[str]:
        return [sid for sid, s in self.streams.items() if s.queue][: self.max_batch]

    def step_ready(self) -> int:
        """Step the next frame of up to ``max_batch`` streams as one batch; frames stepped."""
        ids = self.ready()
        if not ids:
            return 0
        slots = [self.streams[sid] for sid in ids]
        heads = [s.queue.popleft() for s in slots]
        for sid, s, head in zip(ids, slots, heads, strict=True):
            for prompt in s.prompts.pop(head.frame_idx, []):
                try:
                    self.model.add_prompt(
                        s.state, torch.from_numpy(prompt.masks), prompt.object_ids
                    )
                except ValueError as exc:
                    log.error(
                        "stream %s: prompt at frame %d rejected: %s", sid, head.frame_idx, exc
                    )
        frames = torch.from_numpy(np.stack([h.rgb for h in heads]))
        started = time.perf_counter()
        results = self.model.step([s.state for s in slots], frames)
        self.step_seconds += time.perf_counter() - started
        names = self.model.cfg.class_names
        for sid, s, head, r in zip(ids, slots, heads, results, strict=True):
            self.emit(
                FrameTracks(
                    stream_id=sid,
                    frame_idx=head.frame_idx,
                    pts_ns=head.pts_ns,
                    capture_ts=head.capture_ts,
                    source_height=head.source_height,
                    source_width=head.source_width,
                    track_ids=r.track_ids.numpy(),
                    labels=[names[i] for i in r.labels.tolist()],
                    scores=r.scores.numpy(),
                    masks=r.masks.numpy(),
                    boxes=r.boxes.numpy(),
                    prompt_object_ids=r.prompt_object_ids.numpy(),
                )
            )
            s.next_frame = head.frame_idx + 1
            s.frames_done += 1
            self._finish_if_done(sid)
        return len(ids)

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
