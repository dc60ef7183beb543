"""Checkpoint writing off the step loop, and where a partition's reading resumes.

:class:`CheckpointWriter` takes checkpoints the worker snapshotted between steps and
writes them on its own thread, in the commit order of :mod:`.checkpoint`: the tracks
producer is flushed first (so every track message of the frames a checkpoint covers is
delivered), then each state object and manifest, then the partition manifests. A stream
snapshotted again before its previous checkpoint was written replaces it (the newer one
covers more), so slow storage costs replay length, never step time.

A store outage costs the same, no more: a write the store fails
(:func:`~ausm_stream.pipeline.storage.is_store_error`) is logged, counted in the worker's
:class:`~ausm_stream.pipeline.storage.ServiceHealth` and tried again after a back-off
(``storage.retry_initial_s`` doubling to ``storage.retry_max_s``), the checkpoints not yet
written kept in order (or replaced by newer ones of their streams), until the store answers.
Any other error (a bug) loses that one checkpoint (the previous one stays in force), is
raised once to the step loop at its next call, and does not stop later writes.

:func:`recovery_plan` reads a partition's manifest and its streams' newest valid
checkpoints and says where to seek: the smallest offset any stream still needs.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ausm_stream.operators.checkpoint import (
    Checkpoint,
    CheckpointStore,
    PartitionManifest,
)
from ausm_stream.pipeline.ids import is_stream_id, shown
from ausm_stream.pipeline.storage import Backoff, ServiceHealth, is_store_error

log = logging.getLogger(__name__)


class CheckpointWriter:
    def __init__(
        self,
        store: CheckpointStore,
        topic: str,
        flush_sinks: Callable[[], None],
        on_written: Callable[[str, int], None] | None = None,
        backoff: Backoff | None = None,
        health: ServiceHealth | None = None,
    ) -> None:
        """``on_written(stream_id, frame)`` is called on the writer thread once a stream's
        checkpoint (resuming at ``frame``) is stored. ``backoff`` paces the tries while the
        store fails, ``health`` counts the failures."""
        self.store = store
        self.topic = topic
        self.flush_sinks = flush_sinks
        self.on_written = on_written
        self.backoff = backoff or Backoff()
        self.health = health or ServiceHealth()
        self.partitions: dict[int, PartitionManifest] = {}
        self.written = 0
        self._jobs: dict[str, tuple[Checkpoint, int]] = {}
        self._dirty: set[int] = set()  # partitions whose manifest is still to be written
        self._lock = threading.Condition()
        self._busy = 0  # checkpoints being written now
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        self._thread.start()

    # called from the step loop ----------------------------------------------------------
    def track(self, manifest: PartitionManifest) -> None:
        """Start keeping a partition's manifest (from recovery, or empty)."""
        with self._lock:
            self.partitions[manifest.partition] = manifest

    def untrack(self, partition: int) -> None:
        with self._lock:
            self.partitions.pop(partition, None)
            self._dirty.discard(partition)

    def note_stream(self, partition: int, stream_id: str, offset: int) -> None:
        """A stream's first record on the partition, read at ``offset``."""
        with self._lock:
            streams = self.partitions[partition].streams
            if stream_id not in streams:
                streams[stream_id] = {"first": offset, "resume": offset}

    def note_position(self, partition: int, position: int) -> None:
        with self._lock:
            self.partitions[partition].position = position

    def submit(self, ckpt: Checkpoint, partition: int) -> None:
        with self._lock:
            self._raise_error()
            self._jobs[ckpt.snapshot.stream_id] = (ckpt, partition)
            self._lock.notify_all()

    def wait(self, timeout_s: float = 120.0) -> None:
        """Block until everything submitted is written (during a store outage, until the
        store is back, or ``TimeoutError`` after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._jobs or self._busy or self._dirty:
                self._raise_error()
                if not self._lock.wait(timeout=max(0.0, deadline - time.monotonic())):
                    outage = self.health.outage_s
                    failing = (
                        f"; the object store has been failing for {outage:.0f} s "
                        f"({self.health.last_error})"
                        if outage
                        else ""
                    )
                    raise TimeoutError(f"checkpoints not written within {timeout_s} s{failing}")
            self._raise_error()

    def idle(self) -> bool:
        """Everything submitted is written."""
        with self._lock:
            return not self._jobs and not self._busy and not self._dirty

    @property
    def backlog(self) -> int:
        """Checkpoints submitted and not yet written."""
        with self._lock:
            return len(self._jobs) + self._busy

    def watermarks(self) -> dict[int, int]:
        """Per partition, the smallest offset a recovery would read from (for lag)."""
        with self._lock:
            return {p: _watermark(m) for p, m in self.partitions.items()}

    def close(self, timeout_s: float = 30.0) -> bool:
        """Write what was submitted, then end the thread; whether it ended in ``timeout_s``
        (if not, call again: it is still writing)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # the writer thread ---------------------------------------------------------------------
    def _raise_error(self) -> None:
        """Raise a bug's error once to the step loop; later writes go on regardless."""
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError("the checkpoint writer failed") from error

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._jobs and not self._dirty and not self._closed:
                    self._lock.wait()
                if not self._jobs and not self._dirty:
                    return
                jobs, self._jobs = self._jobs, {}
                self._busy = len(jobs)
            left = list(jobs.items())
            try:
                self._write(left)
            except Exception as exc:
                if not is_store_error(exc):  # a bug: reported to the step loop
                    log.exception("writing checkpoints failed")
                    with self._lock:
                        self._error = exc
                        if not left:  # met writing partition manifests: the next
                            self._dirty.clear()  # checkpoint writes them again
                self._requeue(left)
                self._pause(exc, left)
            else:
                self.backoff.succeeded()
                self.health.ok()
            finally:
                with self._lock:
                    self._busy = 0
                    self._lock.notify_all()

    def _requeue(self, left: list[tuple[str, tuple[Checkpoint, int]]]) -> None:
        """Put back what was not written, before anything submitted since, unless a newer
        checkpoint of the same stream replaced it meanwhile."""
        with self._lock:
            newer, self._jobs = self._jobs, {}
            for sid, job in left:
                if sid not in newer:
                    self._jobs[sid] = job
            self._jobs.update(newer)
            self._busy = 0
            self._lock.notify_all()

    def _pause(self, exc: BaseException, left: list) -> None:
        """Wait out the back-off before the next try (after a bug too, so that one that
        repeats does not spin); only store errors count as the store's."""
        delay = self.backoff.failed()
        if is_store_error(exc):
            what = f"writing {len(left)} checkpoint(s)" if left else "writing partition manifests"
            self.health.failed(what, exc, delay)
        time.sleep(delay)

    def _write(self, jobs: list[tuple[str, tuple[Checkpoint, int]]]) -> None:
        """Write ``jobs`` in order, removing each from the list once written, then the
        manifests of the partitions they touched."""
        if jobs:
            self.flush_sinks()
        while jobs:
            ckpt, partition = jobs[0][1]
            snap = ckpt.snapshot
            with self._lock:
                known = self.partitions.get(partition)
            topic_id = known.topic_id if known is not None else ""
            try:
                manifest = self.store.write(ckpt, self.topic, partition, topic_id)
            except Exception as exc:
                if not is_store_error(exc):  # this checkpoint's bug: it is lost (the stream's
                    jobs.pop(0)  # previous one stays in force), the others are not
                raise
            jobs.pop(0)
            self.written += 1
            if self.on_written is not None:
                self.on_written(snap.stream_id, snap.next_frame)
            with self._lock:
                self._busy = len(jobs)
                known = self.partitions.get(partition)
                if known is not None:
                    self._dirty.add(partition)
                    if snap.ended:  # nothing left to recover: its records come again only
                        known.streams.pop(snap.stream_id, None)  # if it restarts (page-in)
                        continue
                    entry = known.streams.setdefault(
                        snap.stream_id, {"first": manifest.offset, "resume": manifest.offset}
                    )
                    entry["resume"] = manifest.offset
        with self._lock:
            dirty = sorted(self._dirty)
        for partition in dirty:
            with self._lock:
                manifest = copy.deepcopy(self.partitions.get(partition))
            if manifest is not None:
                self.store.write_partition(manifest)
            with self._lock:
                self._dirty.discard(partition)


def _watermark(manifest: PartitionManifest) -> int:
    return min([manifest.position, *(s["resume"] for s in manifest.streams.values())])


@dataclass
class RecoveryPlan:
    partition: int
    seek: int | None
    """Offset to read from; ``None`` = the partition's earliest."""
    manifest: PartitionManifest
    """What the worker's writer keeps for the partition from now on."""
    restored: list[Checkpoint] = field(default_factory=list)


def recovery_plan(
    store: CheckpointStore, topic: str, partition: int, partitions: int, topic_id: str = ""
) -> RecoveryPlan:
    """The newest valid checkpoint of every stream known on the partition, and the smallest
    offset any of them (or a stream without one) still needs. ``topic_id`` (the topic's
    now): what was written for an earlier topic of the same name is refused, its streams
    start afresh from the new topic's records."""
    known = store.load_partition(topic, partition)
    if known is not None and topic_id and known.topic_id and known.topic_id != topic_id:
        log.error(
            "%s/%d: its manifest was written for topic id %s, the topic is now %s (created "
            "again): its checkpoints are refused, its streams start from the new records",
            topic,
            partition,
            known.topic_id,
            topic_id,
        )
        known = None
    if known is None:
        streams = store.discover(topic, partition, partitions)
        known_first: dict[str, int | None] = dict.fromkeys(streams)
        position = 0
    else:
        known_first = {sid: s["first"] for sid, s in known.streams.items()}
        position = known.position
    restored, needs = [], []
    manifest = PartitionManifest(topic, partition, position, topic_id=topic_id)
    for sid, first in sorted(known_first.items()):
        if not is_stream_id(sid):  # written by a build that did not check ids
            log.error(
                "%s/%d: its manifest names %s, not a stream id; left out",
                topic,
                partition,
                shown(sid),
            )
            continue
        loaded = store.load(sid, topic_id)
        if loaded is None:
            needs.append(first)  # replayed from its first record (None: from the start)
            if first is not None:
                manifest.streams[sid] = {"first": first, "resume": first}
            continue
        ckpt, found = loaded
        restored.append(ckpt)
        needs.append(found.offset)
        start = found.offset if first is None else first
        manifest.streams[sid] = {"first": start, "resume": found.offset}
    if known is None or None in needs:
        # Without the partition's manifest, streams that never wrote a checkpoint are
        # unknown: read everything (checkpointed streams still skip what they cover).
        return RecoveryPlan(partition, None, manifest, restored)
    return RecoveryPlan(partition, min([position, *needs]), manifest, restored)
