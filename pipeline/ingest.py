"""Video ingest: decode (PyAV), resample, resize, pack into chunks, produce to Kafka.

A source is a file path or a URL PyAV opens (``rtsp://``, ``http://``, ...). Live sources
(network URLs, unless told otherwise) never "end": when one drops, ingest reports it and
reconnects with exponential back-off, and the stream goes on with dense frame indexes and
timestamps that keep increasing across the gap. A file ends at its last frame, after which
an ``end`` record is produced; :meth:`Ingest.stop` pauses a stream without ending it.

Frames are fitted into the model's input as ``ingest.fit`` says (:mod:`.geometry`:
letterboxed by default, so shapes keep their proportions; or stretched), the whole field of
view kept; the source size and the content box travel in every chunk. With ``fps`` set,
frames are picked by presentation time so the output runs at that rate; with ``pace`` a
file is produced at its own frame rate, as a camera would deliver it.

**Resuming.** Before producing, ingest reads back the newest record of its stream in the
frames topic (:func:`newest_record`) and continues after it:
a restarted ingest (a crashed Ray actor, a restarted command) never repeats or skips a
frame index. A file is decoded from its start again and its frames up to the last one
produced are dropped, so the frames that follow, their chunking and their timestamps are
exactly those of an uninterrupted run; a file whose stream already ended is not produced
again. A live source continues at the next index, its downtime reported as a drop.

**Broker outages.** The producer retries a record through an outage by itself, in order
(``kafka.delivery_timeout_s``); while its buffer is full, ingest waits for room, retrying
with the reconnect back-off, and reports the wait as a drop (``reconnecting``) without losing
a frame of a file. A record the producer gave up ends the run with :class:`DeliveryError`;
:class:`IngestJob` then starts again, with a new producer and after the back-off, from what
the topic holds, exactly as after a crash.

A stream added again after it ended (the control plane's ``reset`` record, then a new
ingest with ``first_frame``) numbers its frames on from ``first_frame``: the old stream's
rows are never replaced.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import av
import numpy as np
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata

from ausm_stream.errors import ConflictError, DeliveryError, RecordError, SourceError
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import IngestConfig, KafkaConfig
from ausm_stream.pipeline.geometry import Fit, Placement
from ausm_stream.pipeline.ids import check_stream_id
from ausm_stream.pipeline.sources import NETWORK_SCHEMES, protocol_whitelist

log = logging.getLogger(__name__)

MAX_SOURCE_PIXELS = 8192 * 8192
"""Largest source frame decoded (64 Mpx: 8K video is 33 Mpx)."""
PROMPT_WAIT_S = 30.0
"""Longest a prompt waits for a starting ingest, and for the broker to take it."""
SOURCE_FAILED = "the source could not be read (the ingest's log says why)"
"""What clients see of a source's failure (:meth:`Ingest._drop`)."""
CONNECT_MS = 5000
"""How long ingest waits for a first broker before it reports them away and backs off."""
LIVE_SCHEMES = tuple(f"{scheme}://" for scheme in NETWORK_SCHEMES)

_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s'\"]*@")


def redact_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it shown as ``***@``: camera
    URLs carry credentials, which the registry keeps (ingest needs them) but nothing shows,
    logs or returns (``rtsp://admin:pw@cam/s`` -> ``rtsp://***@cam/s``). FFmpeg's errors
    quote the URL, so whole messages go through it."""
    return _USERINFO.sub(r"\1***@", text)


@dataclass
class Decoded:
    rgb: np.ndarray  # (h, w, 3) at the model's size
    pts_s: float  # presentation time in the source session
    placement: Placement
    """Where the source frame lies on ``rgb``."""


IngestState = Literal["starting", "connected", "reconnecting", "ended", "stopped", "failed"]


@dataclass
class IngestReport:
    stream_id: str
    frames: int = 0
    """The stream's frame count so far: the index of the next frame it produces."""
    produced: int = 0
    """Frames sent to the frames topic: ``frames`` less those waiting to fill a chunk."""
    chunks: int = 0
    reconnects: int = 0
    drops: list[str] = field(default_factory=list)
    """One line per drop of the source: when and why."""
    source_height: int = 0
    source_width: int = 0
    """The source's frame size (0 before its first frame)."""
    state: IngestState = "starting"
    """``connected`` while frames come, ``reconnecting`` between a drop and the next frame,
    ``ended`` after the source's end was produced, ``stopped`` by :meth:`Ingest.stop`,
    ``failed`` when it gave up (the error is the last drop)."""


def decode_source(
    url: str, size: tuple[int, int], fit: Fit = "letterbox", timeout_s: float = 10.0
) -> Iterator[Decoded]:
    """Frames of one session of the source, fitted (``fit``) into ``size`` (h, w)."""
    options = {"protocol_whitelist": protocol_whitelist(url)}
    if url.startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = "tcp"
    shown = redact_credentials(url)
    try:
        container = av.open(url, options=options, timeout=(timeout_s, timeout_s))
    except (av.FFmpegError, OSError) as exc:
        reason = redact_credentials(str(exc))
        raise SourceError(f"cannot open video source {shown!r}: {reason}") from None
    try:
        if not container.streams.video:
            raise SourceError(f"video source {shown!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # FFmpeg refuses frames above this before allocating them (a hostile stream's header
        # may declare any size); records hold sources up to MAX_SOURCE_SIDE a side.
        stream.codec_context.options = {"max_pixels": str(MAX_SOURCE_PIXELS)}
        decoded = 0
        for frame in container.decode(stream):
            pts = float(frame.time) if frame.time is not None else None
            decoded += 1
            place = Placement.fit((frame.height, frame.width), size, fit)
            content = frame.to_ndarray(format="rgb24", width=place.width, height=place.height)
            yield Decoded(place.place(content), pts if pts is not None else float("nan"), place)
        if stream.frames and decoded < stream.frames:  # the container's index promised more
            raise SourceError(
                f"video source {shown!r} ended after {decoded} of the {stream.frames} frames "
                "its index lists: the file is truncated or damaged"
            )
    except av.FFmpegError as exc:
        reason = redact_credentials(str(exc))
        raise SourceError(f"video source {shown!r} failed while reading: {reason}") from None
    finally:
        container.close()


class Ingest:
    """Produces one stream; ``run()`` blocks until the source ends or ``stop()`` is called."""

    def __init__(
        self,
        stream_id: str,
        url: str,
        size: tuple[int, int],
        producer: KafkaProducer | None,
        kafka_cfg: KafkaConfig,
        cfg: IngestConfig,
        live: bool | None = None,
        on_drop: Callable[[str], None] | None = None,
        clock: Callable[[], int] = time.time_ns,
        first_frame: int = 0,
    ) -> None:
        self.stream_id = check_stream_id(stream_id)  # its key, and the worker's paths
        self.url = url
        self.size = size
        self.producer = producer
        self.kafka_cfg = kafka_cfg
        self.cfg = cfg
        self.live = url.startswith(LIVE_SCHEMES) if live is None else live
        self.on_drop = on_drop
        self.clock = clock
        self.first_frame = first_frame
        self.report = IngestReport(stream_id, frames=first_frame, produced=first_frame)
        self._stop = threading.Event()
        self._sending = threading.RLock()  # chunks and prompts (from another thread) in order
        self._resumed = threading.Event()  # where it stands in the topic is known
        self._partition = kafka.partition_for(stream_id, kafka_cfg.partitions)
        self._chunk: list[tuple[np.ndarray, int, int]] = []
        self._placement: Placement | None = None  # of the frames in the chunk
        self._last_ts = 0
        self._offset_s = 0.0  # added to session pts so time keeps increasing across sessions
        self._next_pick = 0.0
        self._resume_at = first_frame  # frames below this index came from an earlier run
        self._base_wall: int | None = None
        self._unacked: collections.deque[tuple[FutureRecordMetadata, float]] = collections.deque()
        """Frames, end and reset records sent and not yet acknowledged (and when), oldest
        first."""
        self._broker_stalled = False  # reported that acknowledgements stopped
        self._paced_from: tuple[float, float] | None = None  # (pts, monotonic) of pacing
        self._stopped = False  # by stop(), not by the source or max_frames
        self._halt = threading.Event()  # set by stop() only: ends waits for the brokers
        self._closing: IngestState | None = None  # its end is sent: no more prompts

    def stop(self) -> None:
        """Stop producing without ending the stream: a later ingest of the same stream
        resumes after the last frame produced (the source, not a stop, ends a stream)."""
        self._stopped = True
        self._halt.set()
        self._stop.set()

    def resume(self, last: records.Record | None) -> bool:
        """Continue after ``last``, the stream's newest record in the frames topic (see the
        module doc); ``False`` when there is nothing left to produce."""
        if isinstance(last, records.ControlRecord) and last.kind == "reset":
            # A new life of the stream starts at the reset's frame: nothing of it produced yet
            # (an ingest that was not told, ``ausm-stream ingest`` of an external stream,
            # learns its first frame here).
            self.first_frame = self._resume_at = max(self.first_frame, last.frame_idx)
            self.report.frames = self.report.produced = self.first_frame
            return True
        if isinstance(last, records.ControlRecord) and last.kind == "end":
            if not self.live:
                log.info("stream %s already ended at frame %d", self.stream_id, last.frame_idx)
                self.report.frames = self.report.produced = last.frame_idx
                self.report.state = "ended"
                return False
            self._resume_at = last.frame_idx
        elif isinstance(last, records.FrameChunk):
            self._resume_at = int(last.frame_idx[-1]) + 1
            self._last_ts = int(last.capture_ts[-1])
            if self.live:  # continue the timeline after the last frame produced
                self._offset_s = last.pts_ns[-1] / 1e9 + (
                    1 / self.cfg.fps if self.cfg.fps else 0.04
                )
            else:  # the same capture clock as the run that produced the earlier frames
                self._base_wall = int(last.capture_ts[-1]) - int(last.pts_ns[-1])
        if self._resume_at > self.first_frame:
            log.info("stream %s resumes after frame %d", self.stream_id, self._resume_at - 1)
            if self.live:
                self._drop(f"ingest restarted; continuing at frame {self._resume_at}", 0)
            self.report.frames = self._resume_at if self.live else self.first_frame
            self.report.produced = self._resume_at
        return True

    def run(
        self, max_frames: int | None = None, last: records.Record | None = None
    ) -> IngestReport:
        """Produce until the source ends (files), ``max_frames`` frames are produced, or
        :meth:`stop`; ``last`` is the stream's newest record already in the topic."""
        with self._sending:
            resumed = self.resume(last)
        self._resumed.set()
        if not resumed:
            return self.report
        failures = 0
        base_wall = self._base_wall if self._base_wall is not None else self.clock()
        while not self._stop.is_set():
            session_last = None  # seconds since this session's first frame
            try:
                session_first = last_raw = None
                for d in decode_source(self.url, self.size, self.cfg.fit):
                    failures = 0
                    self.report.state = "connected"
                    if math.isfinite(d.pts_s):
                        raw = d.pts_s
                    else:  # no timestamp: assume 25 fps after the previous frame
                        raw = 0.0 if last_raw is None else last_raw + 0.04
                    last_raw = raw
                    session_first = raw if session_first is None else session_first
                    session_last = raw - session_first
                    pts = self._offset_s + session_last
                    if not self._due(pts):
                        continue
                    capture = self.clock() if self.live else base_wall + int(pts * 1e9)
                    self._add(d, int(pts * 1e9), capture)
                    if (max_frames and self.report.frames >= max_frames) or self._stop.is_set():
                        self._stop.set()
                        break
                if not self.live:
                    break
                reason = shown = "the source ended"
            except SourceError as exc:
                reason, shown = str(exc), SOURCE_FAILED
            if self._stop.is_set():
                break
            if not self.live:
                if self.report.frames == self.first_frame:
                    self.report.state = "failed"
                    raise SourceError(reason)
                # Re-reading a file would repeat its frames: end the stream where it broke.
                self._drop(reason, 1, shown)
                log.error(
                    "stream %s: file source broke after %d frames; ending the stream",
                    self.stream_id,
                    self.report.frames,
                )
                break
            failures += 1
            self._drop(reason, failures, shown)
            if self.cfg.reconnect_attempts and failures > self.cfg.reconnect_attempts:
                log.error(
                    "stream %s: giving up after %d failed reconnects", self.stream_id, failures - 1
                )
                self.report.state = "failed"
                break
            # The next session's clock starts one frame after everything seen so far.
            if session_last is not None:
                self._offset_s += session_last + (1 / self.cfg.fps if self.cfg.fps else 0.04)
            self._stop.wait(self._backoff(failures))
        with self._sending:  # no prompt between the last chunk and the end
            self._flush()
            final = self.report.state
            if self._stopped:
                final = "stopped"
            elif (
                self._send(records.ControlRecord("end", self.stream_id, self.report.frames))
                and final != "failed"
            ):
                final = "ended"
            self._closing = final  # prompts are refused from here on
        self._deliver()  # may report the brokers' silence meanwhile
        self.report.state = final  # ended: delivered
        return self.report

    def again(self) -> Ingest:
        """A new ingest of the same stream, without a producer yet, for a run after this
        one's failed on the brokers: it carries this one's report (its drops, its counts)
        and stop."""
        fresh = Ingest(
            self.stream_id,
            self.url,
            self.size,
            None,
            self.kafka_cfg,
            self.cfg,
            self.live,
            self.on_drop,
            self.clock,
            self.first_frame,
        )
        fresh.report = self.report
        fresh._stop, fresh._stopped, fresh._halt = self._stop, self._stopped, self._halt
        return fresh

    def prompt(self, prompt: records.PromptRecord) -> records.PromptRecord:
        """Send a prompt between this stream's chunks, for the frame it names or, naming
        none, the next frame sent: the prompt as sent, its frame set. Ordered with the
        frames by this producer, so it costs no read of the topic."""
        if not self._resumed.wait(PROMPT_WAIT_S):
            raise ConflictError(
                f"stream {self.stream_id!r} is still starting (reading where it stands in the "
                "frames topic); try again in a moment"
            )
        with self._sending:
            produced = self.report.produced
            closed = self._closing or self.report.state
            if closed in ("ended", "failed", "stopped"):
                raise ConflictError(f"stream {self.stream_id!r} is {closed} at frame {produced}")
            check_prompt_frame(prompt, produced)
            at = produced if prompt.frame_idx is None else prompt.frame_idx
            sent = dataclasses.replace(prompt, frame_idx=at)
            delivered = self._produce(sent)
        delivered.get(timeout=PROMPT_WAIT_S)  # raises if the broker did not take it
        return sent

    def _due(self, pts: float) -> bool:
        """Frame-rate resampling: keep the first frame at or after each tick of 1/fps."""
        if not self.cfg.fps:
            return True
        if pts + 1e-9 < self._next_pick:
            return False
        step = 1 / self.cfg.fps
        self._next_pick += (math.floor((pts - self._next_pick) / step) + 1) * step
        return True

    def _produce(self, record: records.Record) -> FutureRecordMetadata:
        value, kind = records.encode(record)
        return kafka.send(
            self.producer,
            self.kafka_cfg.frames_topic,
            self.stream_id,
            value,
            kind,
            partition=self._partition,
        )

    def _send(self, record: records.Record) -> bool:
        """Produce a frames, end or reset record, waiting while the producer's buffer is full
        (the brokers away): whether it was sent (not if :meth:`stop` was called meanwhile).
        Checks first that the records before it were delivered (:class:`DeliveryError` if
        not)."""
        self._check_delivered()
        waits = 0
        while not self._stopped:
            try:
                self._unacked.append((self._produce(record), time.monotonic()))
            except KafkaTimeoutError as exc:
                waits += 1
                self._drop(f"Kafka brokers not taking records ({exc}); waiting", waits)
                self._halt.wait(self._backoff(waits))
                continue
            if waits:
                self.report.state = "connected"
            return True
        return False

    def _deliver(self) -> None:
        """Wait until what was sent is delivered; when stopped, for ``kafka.STOP_FLUSH_S`` at
        most (the brokers may be away: a later ingest resumes after what the topic holds)."""
        while not self._stopped:
            try:
                self.producer.flush(timeout=kafka.ACK_STALL_S)
            except KafkaTimeoutError:
                self._check_delivered()  # reports the brokers' silence, or what they gave up
                continue
            self._check_delivered()
            return
        try:
            self.producer.flush(timeout=kafka.STOP_FLUSH_S)
        except KafkaTimeoutError:
            log.warning(
                "stream %s stopped with %d records not delivered (the Kafka brokers are away)",
                self.stream_id,
                len(self._unacked),
            )

    def _check_delivered(self) -> None:
        """Forget the acknowledged records; :class:`DeliveryError` if the producer gave one up
        (the brokers were away for longer than ``kafka.delivery_timeout_s``). Records waiting
        longer than ``kafka.ACK_STALL_S`` are reported once as a drop (the producer keeps
        them and keeps trying)."""
        while self._unacked and self._unacked[0][0].is_done:
            sent, _ = self._unacked.popleft()
            if self._broker_stalled and not sent.failed():
                self._broker_stalled = False  # the brokers answer again
                self.report.state = "connected"
            if sent.failed():
                self._unacked.clear()  # those after it are given up as well, or out of order
                raise DeliveryError(
                    f"stream {self.stream_id!r}: the Kafka brokers did not take a record "
                    f"within kafka.delivery_timeout_s ({sent.exception})"
                )
        waited = time.monotonic() - self._unacked[0][1] if self._unacked else 0.0
        if waited > kafka.ACK_STALL_S and not self._broker_stalled:
            self._broker_stalled = True
            self._drop(f"Kafka brokers have not acknowledged for {waited:.0f} s; retrying", 1)

    def _backoff(self, failures: int) -> float:
        return min(self.cfg.reconnect_max_s, self.cfg.reconnect_initial_s * 2 ** (failures - 1))

    def _drop(self, reason: str, failures: int, shown: str | None = None) -> None:
        """Report a drop: ``reason`` in the log, ``shown`` (default: the reason) in the
        report, which the API returns: a source's own error tells a refused port from a
        missing page, so clients get :data:`SOURCE_FAILED` and the log the details."""
        reason = redact_credentials(reason)  # logged
        line = f"{time.strftime('%H:%M:%S')} after frame {self.report.frames}: {shown or reason}"
        self.report.drops.append(line)
        self.report.reconnects += 1
        self.report.state = "reconnecting"
        log.warning(
            "stream %s dropped (%s); reconnect attempt %d", self.stream_id, reason, failures
        )
        if self.on_drop is not None:
            self.on_drop(line)

    def _add(self, d: Decoded, pts_ns: int, capture_ns: int) -> None:
        if self.report.frames < self._resume_at:  # produced before a restart (files)
            self.report.frames += 1
            return
        if self.cfg.pace and not self.live:
            self._pace(pts_ns / 1e9)
        capture_ns = max(capture_ns, self._last_ts + 1)  # strictly increasing
        self._last_ts = capture_ns
        if d.placement != self._placement:  # a source that changed size: one chunk, one size
            if self._chunk:
                self._flush()
            self._placement = d.placement
            self.report.source_height, self.report.source_width = d.placement.source
        self._chunk.append((d.rgb, pts_ns, capture_ns))
        self.report.frames += 1
        if len(self._chunk) >= self.cfg.chunk_frames:
            self._flush()

    def _pace(self, pts_s: float) -> None:
        """Wait until a file's frame is due at its own rate (``ingest.pace``)."""
        now = time.monotonic()
        if self._paced_from is None:
            self._paced_from = (pts_s, now)
        due = self._paced_from[1] + (pts_s - self._paced_from[0])
        if due > now:
            self._stop.wait(due - now)

    def _flush(self) -> None:
        if not self._chunk:
            return
        first = self.report.frames - len(self._chunk)
        chunk = records.FrameChunk(
            stream_id=self.stream_id,
            frame_idx=np.arange(first, first + len(self._chunk), dtype=np.int64),
            pts_ns=np.array([p for _, p, _ in self._chunk], dtype=np.int64),
            capture_ts=np.array([c for _, _, c in self._chunk], dtype=np.int64),
            source_height=self.report.source_height,
            source_width=self.report.source_width,
            frames=np.stack([f for f, _, _ in self._chunk]),
            content=self._placement.content if self._placement else None,
        )
        with self._sending:
            if self._send(chunk):
                self.report.chunks += 1
                self.report.produced = self.report.frames
        self._chunk = []


def check_prompt_frame(prompt: records.PromptRecord, upcoming: int) -> None:
    """A prompt may name a frame not yet in the topic (``upcoming`` is the next one), or none."""
    if prompt.frame_idx is not None and prompt.frame_idx < upcoming:
        raise ConflictError(
            f"frame {prompt.frame_idx} of stream {prompt.stream_id!r} is already ingested (the "
            f"next is {upcoming}): prompt at a frame >= {upcoming}, or give none for the next"
        )


FRAME_KINDS = ("frames", "end", "reset")
"""The records that say where a stream's frames stand (prompts say nothing of it)."""


def newest_record(
    kafka_cfg: KafkaConfig,
    reader: kafka.TopicReader,
    stream_id: str,
    before: int | None = None,
) -> records.FrameChunk | records.ControlRecord | None:
    """The stream's newest frames, end or reset record in the frames topic (before offset
    ``before`` of its partition, if given), decoded; ``None`` if it has none."""
    msg = reader.last_record_of(
        kafka_cfg.frames_topic,
        kafka.partition_for(stream_id, kafka_cfg.partitions),
        stream_id,
        before=before,
        kinds=FRAME_KINDS,
    )
    if msg is None:
        return None
    kind = kafka.header(msg.headers, records.KIND_HEADER)
    try:
        return records.decode(kind, msg.value or b"", stream_id)
    except RecordError as exc:
        raise SourceError(
            f"stream {stream_id!r}: its newest record in {msg.topic}/{msg.partition} "
            f"at offset {msg.offset} is unreadable ({exc}); cannot tell where it stands"
        ) from exc


class IngestJob:
    """One stream's ingest with its own producer: the unit a Ray actor or a command runs.
    It connects to the brokers in :meth:`run`, not before: brokers that are away when it
    starts are waited for like a lost camera."""

    def __init__(
        self,
        stream_id: str,
        url: str,
        size: tuple[int, int],
        kafka_cfg: KafkaConfig,
        bootstrap: str,
        cfg: IngestConfig,
        live: bool | None = None,
        first_frame: int = 0,
    ) -> None:
        self.bootstrap = bootstrap
        self.ingest = Ingest(
            check_stream_id(stream_id),  # before anything is made for it
            url,
            size,
            None,
            kafka_cfg,
            cfg,
            live=live,
            first_frame=first_frame,
        )

    def run(self, max_frames: int | None = None) -> IngestReport:
        """Resume after the stream's newest record in the frames topic, then produce. When the
        brokers cannot be reached or give up a record, start again from what the topic
        holds, with a new producer, after the reconnect back-off (as after a crash);
        ``ingest.reconnect_attempts`` failures in a row (if set) fail the stream."""
        failures = 0
        while True:
            ing = self.ingest
            try:
                if ing.producer is None:  # brokers away are reported within seconds
                    ing.producer = kafka.make_producer(
                        ing.kafka_cfg, self.bootstrap, connect_ms=CONNECT_MS
                    )
                return ing.run(max_frames, last=self.last_produced())
            except (DeliveryError, KafkaError) as exc:
                failures += 1
                ing._drop(f"Kafka: {exc}; starting again", failures)
                attempts = ing.cfg.reconnect_attempts
                if attempts and failures > attempts:
                    ing.report.state = "failed"
                    raise
                if ing._halt.wait(ing._backoff(failures)):
                    ing.report.state = "stopped"
                    return ing.report
                if ing.producer is not None:
                    kafka.close_now(ing.producer)
                self.ingest = ing.again()

    def last_produced(self) -> records.Record | None:
        ing = self.ingest
        with kafka.TopicReader(ing.kafka_cfg, self.bootstrap) as reader:
            return newest_record(ing.kafka_cfg, reader, ing.stream_id)

    def stop(self) -> None:
        self.ingest.stop()

    def prompt(self, prompt: records.PromptRecord) -> records.PromptRecord:
        return self.ingest.prompt(prompt)

    def report(self) -> IngestReport:
        return self.ingest.report

    def pid(self) -> int:
        """The process id (of the Ray actor's process, for operators and failover tests)."""
        return os.getpid()
