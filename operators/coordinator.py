"""The coordinator: a named Ray actor that owns which worker reads which partitions.

It starts the workers with contiguous ranges of the frames topic's partitions, answers a
(restarted) worker's question "which partitions are mine now?", and moves partitions when
workers are added or removed while the pipeline runs. The assignment is sticky: a change
moves as few partitions as it can (:func:`rebalance`). A partition moves in order: its old
owner checkpoints the partition's streams and drops them (``release`` returns once the
checkpoints are written), then the new owner recovers them from those checkpoints
(``acquire``). Kafka consumer-group rebalancing is never used: workers assign partitions
explicitly.

A worker that crashes is restarted by Ray and recovers by itself (``start_worker``); one
that is gone for good (its restarts used up) is noticed when its run fails, and its
partitions go to the others, which recover them from their last checkpoints. A run that
raises (its process lives on: a bug, a store that does not answer) is started again after a
back-off, 1 s doubling up to a minute (:func:`restart_delay`); the worker recovers its
streams from their checkpoints.

Health (:meth:`Coordinator.health`) reads the heartbeats the workers push from inside their
loops (their status, every second): a worker whose heartbeat is older than
``worker.heartbeat_timeout_s`` is stuck or gone, one waiting to run again is restarting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import ray
from ray.exceptions import RayActorError, RayTaskError

from ausm_stream.errors import ConfigError
from ausm_stream.operators.calls import brief
from ausm_stream.operators.status import PoolStatus, Preview, StreamStatus, WorkerStatus
from ausm_stream.pipeline import kafka
from ausm_stream.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)


STATUS_STALE_S = 5.0
"""A pushed worker status older than this is not served: the worker is asked instead."""
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0
"""A failed run starts again after ``RESTART_FIRST_S``, doubling with each failure in a row
up to ``RESTART_MAX_S``; a run that lasted ``RESTART_MAX_S`` starts the count again."""


def restart_delay(failures: int) -> float:
    """Seconds before a worker's run starts again after ``failures`` failures in a row."""
    return min(RESTART_MAX_S, RESTART_FIRST_S * 2 ** (max(failures, 1) - 1))


@dataclass
class RunFailure:
    """A worker's run that raised, and when it starts again."""

    count: int
    """Failures in a row."""
    error: str
    again_at: float | None
    """When (monotonic) the run starts again; ``None`` once it has."""


def split_partitions(partitions: int, workers: int) -> list[list[int]]:
    """Contiguous ranges, as even as possible: 8 partitions over 3 workers give
    [0, 1, 2], [3, 4, 5], [6, 7]."""
    if not 1 <= workers <= partitions:
        raise ValueError(f"cannot split {partitions} partitions over {workers} workers")
    base, extra = divmod(partitions, workers)
    ranges, start = [], 0
    for i in range(workers):
        end = start + base + (i < extra)
        ranges.append(list(range(start, end)))
        start = end
    return ranges


def rebalance(assignment: dict[str, list[int]], partitions: int) -> dict[str, list[int]]:
    """A new assignment over the workers named in ``assignment`` (some may own nothing yet)
    that keeps every worker's partitions where it can: sizes differ by at most one, and only
    the partitions over a worker's share, or of a worker gone, move."""
    names = list(assignment)
    if not 1 <= len(names) <= partitions:
        raise ValueError(f"cannot spread {partitions} partitions over {len(names)} workers")
    base, extra = divmod(partitions, len(names))
    order = sorted(names, key=lambda w: (-len(assignment[w]), w))
    share = {w: base + (i < extra) for i, w in enumerate(order)}
    kept = {w: sorted(assignment[w])[: share[w]] for w in names}
    taken = {p for ps in kept.values() for p in ps}
    free = [p for p in range(partitions) if p not in taken]
    for w in order:
        while len(kept[w]) < share[w]:
            kept[w].append(free.pop(0))
        kept[w].sort()
    return kept


def worker_count(cfg: PipelineConfig, cluster: dict[str, float]) -> int:
    """``worker.count``, or as many workers as the cluster's CPUs hold (``count: 0``), or
    its GPUs when workers reserve GPUs (``worker.gpus``).

    An explicit count of GPU workers is not checked against the GPUs present: on an
    autoscaled cluster (the Helm chart's GPU worker group) GPU nodes come up for the workers
    that wait for them."""
    w, partitions = cfg.worker, cfg.kafka.partitions
    cpus = int(cluster.get("CPU", 0))
    if w.count == 0:
        fit = cpus // max(w.cpus, 1)
        if w.gpus:
            fit = min(fit, int(cluster.get("GPU", 0) // w.gpus))
        return max(1, min(partitions, fit))
    if w.count > partitions:
        raise ConfigError(
            f"worker.count={w.count} is more than kafka.partitions={partitions}: "
            "a worker without partitions would have nothing to do"
        )
    if not w.gpus and w.count * w.cpus > cpus:
        raise ConfigError(
            f"worker.count={w.count} x worker.cpus={w.cpus} needs {w.count * w.cpus} CPUs; "
            f"the Ray cluster has {cpus}, so some workers would never start"
        )
    return w.count


def owned_streams(stream_ids: set[str], partitions: list[int], cfg: PipelineConfig) -> set[str]:
    """The streams among ``stream_ids`` whose frames go to one of ``partitions``."""
    mine = set(partitions)
    return {s for s in stream_ids if kafka.partition_for(s, cfg.kafka.partitions) in mine}


def coordinator_name(cfg: PipelineConfig) -> str:
    """One coordinator per frames topic on a Ray cluster."""
    return f"ausm-coordinator:{cfg.kafka.frames_topic}"


class Coordinator:
    def __init__(self, cfg: PipelineConfig, bootstrap: str, workers: int | None = None) -> None:
        self.cfg = cfg
        self.bootstrap = bootstrap
        self.name = coordinator_name(cfg)
        count = workers or worker_count(cfg, ray.cluster_resources())
        ranges = split_partitions(cfg.kafka.partitions, count)
        self.assignment = {f"worker-{i}": r for i, r in enumerate(ranges)}
        self.workers = {n: self._start(n, r) for n, r in self.assignment.items()}
        self._added = count
        self._runs: dict[str, ray.ObjectRef] = {}
        self._results: dict[str, WorkerStatus] = {}
        self._pushed: dict[str, tuple[float, WorkerStatus]] = {}
        self._previews: OrderedDict[str, Preview] = OrderedDict()
        self._launched: dict[str, float] = {}
        self._failures: dict[str, RunFailure] = {}
        self._run_args: dict | None = None
        self._lock = threading.RLock()
        self._stopping = False

    def _start(self, name: str, partitions: list[int]) -> ray.actor.ActorHandle:
        # Imported here, in the coordinator's own process: the API imports this module for the
        # coordinator's name and status, and its processes never load the model (or torch).
        from ausm_stream.operators.worker import start_worker

        return start_worker(self.cfg, self.bootstrap, partitions, self.name, name)

    # -- asked by workers and drivers --------------------------------------------------------
    def partitions_of(self, worker: str) -> list[int]:
        with self._lock:
            return list(self.assignment.get(worker, []))

    def current_assignment(self) -> dict[str, list[int]]:
        with self._lock:
            return {w: list(ps) for w, ps in self.assignment.items()}

    def worker_handles(self) -> dict[str, ray.actor.ActorHandle]:
        with self._lock:
            return dict(self.workers)

    def report_status(
        self, worker: str, status: WorkerStatus, previews: list[Preview] | None = None
    ) -> None:
        """A running worker's status, pushed every ``STATUS_PUSH_S``, and the latest frame
        of each stream it stepped since its last previews (every ``PREVIEW_PUSH_S``). The
        coordinator keeps ``worker.preview_streams`` previews per worker, the newest."""
        with self._lock:
            self._pushed[worker] = (time.monotonic(), status)
            for preview in previews or ():
                self._previews.pop(preview.stream_id, None)
                self._previews[preview.stream_id] = preview
            kept = self.cfg.worker.preview_streams * max(1, len(self.workers))
            while len(self._previews) > kept:
                self._previews.popitem(last=False)

    def status(self) -> PoolStatus:
        """The pool now: finished workers' results, live workers' pushed status (at most a
        few seconds old), asking a worker itself only when it has pushed none lately (it is
        starting, or not running)."""
        return PoolStatus.merge([s for s in map(self._status_of, self.worker_handles()) if s])

    def _status_of(self, name: str) -> WorkerStatus | None:
        with self._lock:
            done = self._results.get(name)
            pushed = self._pushed.get(name)
            handle = self.workers.get(name)
        if done is not None:
            return done
        if pushed is not None and time.monotonic() - pushed[0] < STATUS_STALE_S:
            return pushed[1]
        if handle is None:
            return None
        try:
            return ray.get(handle.status.remote(), timeout=30)
        except (RayActorError, ray.exceptions.GetTimeoutError):
            return None  # restarting: it reports again once it is back

    def health(self) -> dict[str, str]:
        """Per worker, ``ok`` while its loop's heartbeat is younger than
        ``worker.heartbeat_timeout_s``, else what is wrong. Only what the workers pushed is
        read: a health check never waits on a worker."""
        now = time.monotonic()
        timeout = self.cfg.worker.heartbeat_timeout_s
        out = {}
        with self._lock:
            for name in self.workers:
                failure = self._failures.get(name)
                launched = self._launched.get(name)
                pushed = self._pushed.get(name)
                # A heartbeat counts from the run now running (not one the failed run sent).
                beat = pushed[0] if pushed and launched and pushed[0] >= launched else None
                if name in self._results:
                    out[name] = "stopped: its run returned"
                elif failure is not None and failure.again_at is not None:
                    wait = max(0.0, failure.again_at - now)
                    out[name] = (
                        f"restarting in {wait:.0f} s after {failure.count} failure(s) in a row: "
                        f"{failure.error}"
                    )
                elif launched is None:
                    out[name] = "not running"
                elif beat is None:
                    out[name] = (
                        f"restarted after {failure.count} failure(s) in a row ({failure.error}); "
                        "no heartbeat yet"
                        if failure is not None
                        else "starting: no heartbeat yet"
                    )
                elif now - beat > timeout:
                    out[name] = (
                        f"no heartbeat for {now - beat:.0f} s: its loop is stuck or its process "
                        "is gone"
                    )
                else:
                    out[name] = "ok"
        return out

    def worker_of(self, stream_id: str) -> str | None:
        """The worker whose partitions hold the stream."""
        p = kafka.partition_for(stream_id, self.cfg.kafka.partitions)
        with self._lock:
            return next((w for w, ps in self.assignment.items() if p in ps), None)

    def preview(self, stream_id: str) -> Preview | None:
        """The stream's latest segmented frame, as its worker last pushed it (no call into a
        worker: a busy one's step paid for each)."""
        with self._lock:
            return self._previews.get(stream_id)

    def stream_status(self, stream_id: str) -> StreamStatus | None:
        """The stream's status, from its owner's latest (see :meth:`status`)."""
        name = self.worker_of(stream_id)
        worker = self._status_of(name) if name else None
        return worker.streams.get(stream_id) if worker else None

    # -- running ------------------------------------------------------------------------------
    def run(
        self,
        until_ended: set[str] | None = None,
        idle_timeout_s: float | None = None,
        max_seconds: float | None = None,
    ) -> PoolStatus:
        """Run every worker's loop (``SegmentationWorker.run``) until all have returned;
        workers added meanwhile join, and a run that raised starts again after a back-off.
        The pool's status at the end."""
        with self._lock:
            self._run_args = {
                "until_ended": until_ended,
                "idle_timeout_s": idle_timeout_s,
                "max_seconds": max_seconds,
            }
            for name in self.workers:
                self._launch(name)
        while True:
            with self._lock:
                self._launch_again()
                pending = {ref: name for name, ref in self._runs.items()}
                waiting = any(f.again_at is not None for f in self._failures.values())
            if not pending and not waiting:
                break
            if not pending:
                time.sleep(0.2)
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2 if waiting else 1.0)
            for ref in ready:
                self._finished(pending[ref], ref)
        with self._lock:
            return PoolStatus.merge(list(self._results.values()))

    def _launch(self, name: str) -> None:
        if self._run_args is not None and name not in self._runs:
            self._launched[name] = time.monotonic()
            self._runs[name] = self.workers[name].run.remote(**self._run_args)

    def _launch_again(self) -> None:
        """Start the runs whose back-off is over (under the lock)."""
        now = time.monotonic()
        for name, failure in self._failures.items():
            if failure.again_at is not None and now >= failure.again_at:
                failure.again_at = None
                if name in self.workers and not self._stopping:
                    log.info("worker %s: its run starts again", name)
                    self._launch(name)

    def _failed(self, name: str, exc: RayTaskError) -> None:
        """A run raised: it starts again after a back-off (the worker recovers its streams)."""
        now = time.monotonic()
        with self._lock:
            self._runs.pop(name, None)
            last = self._failures.get(name)
            ran = now - self._launched.get(name, now)
            count = 1 if last is None or ran >= RESTART_MAX_S else last.count + 1
            delay = restart_delay(count)
            self._failures[name] = RunFailure(count, brief(exc), now + delay)
        log.error(
            "worker %s: its run failed (%s); it starts again in %.0f s (failure %d in a row)",
            name,
            brief(exc),
            delay,
            count,
        )

    def _finished(self, name: str, ref: ray.ObjectRef) -> None:
        try:
            result = ray.get(ref)
        except RayTaskError as exc:
            self._failed(name, exc)
            return
        except RayActorError as exc:
            log.error("worker %s is gone for good (%s); moving its partitions", name, exc)
            with self._lock:
                self._runs.pop(name, None)
                self.workers.pop(name, None)
                orphaned = self.assignment.pop(name, [])
                if self.workers and not self._stopping:
                    self._reassign(orphaned)
            return
        with self._lock:
            self._runs.pop(name, None)
            self._results[name] = result

    def _reassign(self, orphaned: list[int]) -> None:
        """Give a dead worker's partitions to the others (they recover them)."""
        self._move(rebalance(self.assignment, self.cfg.kafka.partitions), {})
        log.info("partitions %s reassigned: %s", orphaned, self.assignment)

    # -- changing the set of workers -------------------------------------------------------
    def add_worker(self) -> str:
        """Start one more worker and move it its share of partitions; returns its name."""
        with self._lock:
            name = f"worker-{self._added}"
            self._added += 1
            if len(self.assignment) + 1 > self.cfg.kafka.partitions:
                raise ConfigError(
                    f"{len(self.assignment) + 1} workers would be more than "
                    f"kafka.partitions={self.cfg.kafka.partitions}"
                )
            handle = self._start(name, [])
            ray.get(handle.alive.remote())  # its model is loaded before anything moves
            target = rebalance({**self.assignment, name: []}, self.cfg.kafka.partitions)
            self._move(target, {name: handle})
            self.workers[name] = handle
            self._launch(name)
        log.info("added %s: %s", name, self.assignment)
        return name

    def remove_worker(self, name: str) -> None:
        """Move a worker's partitions to the others, then end it."""
        with self._lock:
            if name not in self.assignment:
                raise ConfigError(f"no worker named {name!r}; workers: {sorted(self.assignment)}")
            if len(self.assignment) == 1:
                raise ConfigError("cannot remove the last worker")
            rest = {w: ps for w, ps in self.assignment.items() if w != name}
            target = rebalance(rest, self.cfg.kafka.partitions)
            target[name] = []
            self._move(target, {})
            handle = self.workers.pop(name)
            self.assignment.pop(name, None)
            ref = self._runs.get(name)
        ray.get(handle.stop.remote())
        if ref is not None:
            deadline = time.monotonic() + 120
            while name in self._runs and time.monotonic() < deadline:
                time.sleep(0.1)  # ``run`` collects its status
        ray.kill(handle, no_restart=True)
        log.info("removed %s: %s", name, self.assignment)

    def _move(self, target: dict[str, list[int]], new: dict[str, ray.actor.ActorHandle]) -> None:
        """Old owners release first (checkpointing), then new owners acquire."""
        handles = {**self.workers, **new}
        releases = []
        for worker, partitions in self.assignment.items():
            lost = [p for p in partitions if p not in target.get(worker, [])]
            if lost:
                releases.append(handles[worker].release.remote(lost))
        ray.get(releases)
        acquires = []
        for worker, partitions in target.items():
            gained = [p for p in partitions if p not in self.assignment.get(worker, [])]
            if gained:
                acquires.append(handles[worker].acquire.remote(gained))
        self.assignment = {w: ps for w, ps in target.items() if ps or w in new}
        ray.get(acquires)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            handles = list(self.workers.values())
        ray.get([h.stop.remote() for h in handles])

    def kill(self) -> None:
        with self._lock:
            self._stopping = True
            for handle in self.workers.values():
                ray.kill(handle, no_restart=True)


CoordinatorActor = ray.remote(num_cpus=0, max_concurrency=16)(Coordinator)
