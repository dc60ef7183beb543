"""The fault suite: 4 cameras over 2 workers, and every fault, one after the other, in one run.

    .venv/bin/python bench/faults.py            # 60 s store, 90 s broker outage (~25 min here)
    .venv/bin/python bench/faults.py --store-outage-s 10 --broker-outage-s 15 --fps 2  # ~4 min

Everything is real and on 127.0.0.1: Tansu, with its log kept in S3 (moto) for the fault
run, so that it can be stopped and started again without losing a record (in memory for the
run without faults); a second moto server as the object store, behind a proxy that
black-holes it; workers and their coordinator as Ray actors; H.264 files produced at their
own frame rate as live cameras would. The fault run's ``kafka.fetch_max_wait_ms`` is 1 s, not
50 ms (``FETCH_WAIT_MS``: at 50 ms, a Tansu log kept in S3 starves every consumer once it
grows). The model has seeded random weights (``--weights`` for others): this measures the
data plane, not segmentation.

One after the other, within the one run:

1. poison records of each kind and hostile stream ids, once every camera has output;
2. the store away for ``--store-outage-s`` (moto stopped, its connections black-holed);
3. the broker away for ``--broker-outage-s`` (stopped, then started again on its port);
4. SIGKILL of the worker holding the most cameras.

Printed: frames lost, rows duplicated (Parquet frames and tracks rows, tracks-topic rows once
replays are dropped by their headers), dead letters by reason, the longest stall (after
each fault ends, per camera that still had frames to output: seconds until its next new
Parquet window appears in the store, the durable output every frame gets a row in), and
whether the output equals a run without faults (the same Parquet files byte for byte, the
same tracks-topic rows). Targets: 0 lost, 0 duplicated, every poison dead-lettered with its
reason, every stall under 30 s, equal.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fakes

from ausm_stream.errors import RecordError
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.operators.processor import MAX_FRAME_JUMP
from ausm_stream.operators.status import PoolStatus
from ausm_stream.operators.worker import ERROR_HEADER, SOURCE_HEADER
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.broker import EmbeddedBroker
from ausm_stream.pipeline.config import IngestConfig, PipelineConfig, StorageConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.ingest import IngestJob
from ausm_stream.pipeline.storage import ObjectStore, open_store
from tests.conftest import s3_storage, write_random_weights
from tests.e2e import (
    CAPTURE_START_NS,
    consume,
    dataset_files,
    ingest_all,
    pipeline_config,
    run_workers,
    sigkill,
    topic_rows,
    write_videos,
)
from tests.outages import Moto, StoreProxy, log_keeping_broker, moto_process
from tests.poison import HOSTILE_IDS, inflating_chunk, prompt_value, wide_record

STALL_TARGET_S = 30.0
KEY = ["stream_id", "frame_idx", "track_id"]
LAYOUT = re.compile(r"data/(checkpoints|offsets|tracks|frames)/")
"""Where the run writes in its bucket (the store is ``s3://bucket/data``)."""


@dataclass(frozen=True)
class FaultSettings:
    store_outage_s: float = 60.0
    broker_outage_s: float = 90.0
    frames: int | None = None
    """Frames per camera; ``None``: enough that the cameras outlast the faults."""
    streams: int = 4
    workers: int = 2
    settle_s: float = 3.0
    """Seconds between a fault's recovery and the next fault."""
    recover_timeout_s: float = 90.0
    """How long to wait for every camera's output to resume before the next fault."""
    fps: int = 8
    """The cameras' frame rate."""
    parquet_frames: int = 16
    """Frames per Parquet window (2 s at 8 fps): how finely a stall is seen."""
    margin_s: float = 90.0
    """Seconds of video besides the outages, when ``frames`` is not given: the cameras must
    outlast the faults (the first output, the recoveries and the kill)."""
    weights: Path | None = None
    """``None``: the tiny preset with seeded random weights."""

    def frame_count(self) -> int:
        return self.frames or round(
            self.fps * (self.store_outage_s + self.broker_outage_s + self.margin_s)
        )


# -- poison records ------------------------------------------------------------------------
@dataclass(frozen=True)
class Poison:
    kind: str
    key: str | None
    value: bytes
    header: str
    """The record kind header (``ausm-kind``)."""
    partition: int
    reason: str
    """What its dead letter's reason says."""


def blank_chunk(stream: str, first: int, n: int = 8, source: int = 128) -> records.FrameChunk:
    """``n`` black frames (small on the wire), declaring a ``source`` x ``source`` camera."""
    idx = np.arange(first, first + n)
    pixels = np.zeros((n, 128, 128, 3), np.uint8)
    return records.FrameChunk(stream, idx, idx * 10**8, 10**18 + idx, source, source, pixels)


def poisons(cameras: list[str], partitions: int) -> list[Poison]:
    """Every kind of record a worker must dead-letter, spread over the cameras' partitions
    (both workers get some), and a chunk under each hostile id. None is a camera's own
    record: the output must not change."""

    def home(key: str) -> int:
        return kafka.partition_for(key, partitions)

    def chunk(stream: str, first: int = 8, n: int = 8, source: int = 128) -> bytes:
        return records.encode(blank_chunk(stream, first, n, source))[0]

    jump = 2 * MAX_FRAME_JUMP  # sent once the camera has frames: past any it received
    by_camera = [
        ("inflating zstd chunk", lambda s: inflating_chunk(8, s), "frames", "rgb declares"),
        (
            "16000x16000 prompt masks",
            lambda s: prompt_value(4, 16000, 16000, s),
            "prompt",
            "masks are 16000x16000",
        ),
        ("absurd source size", lambda s: chunk(s, source=50_000_000), "frames", "source size"),
        (
            "too many rows",
            lambda s: chunk(s, 0, records.MAX_CHUNK_FRAMES + 1),
            "frames",
            f"holds {records.MAX_CHUNK_FRAMES + 1} rows",
        ),
        ("frame index 2^62", lambda s: chunk(s, 2**62), "frames", "is beyond"),
        ("frame index jump", lambda s: chunk(s, jump), "frames", "jump"),
        ("unreadable bytes", lambda s: b"garbage" * 10, "frames", "not a readable Arrow IPC"),
        ("unknown kind", lambda s: chunk(s), "bogus", "unknown record kind"),
        (
            "2,000 columns (60 KB reason)",
            lambda s: wide_record(),
            "frames",
            "schema does not match",
        ),
    ]
    out = []
    for i, (kind, value, header, reason) in enumerate(by_camera):
        cam = cameras[i % len(cameras)]
        out.append(Poison(kind, cam, value(cam), header, home(cam), reason))
    a, b = cameras[0], cameras[1 % len(cameras)]
    out += [
        Poison("keyless", None, chunk(a), "frames", home(a), "has no key"),
        Poison(
            "wrong partition", a, chunk(a), "frames", (home(a) + 1) % partitions, "is on partition"
        ),
        Poison("another camera's record", a, chunk(b), "frames", home(a), f"under key {a!r}"),
        Poison(
            "hostile id in a record", a, chunk("../../x"), "frames", home(a), "stream id '../../x'"
        ),
    ]
    for bad in HOSTILE_IDS:
        reason = "has no key" if bad == "" else "is not a stream id"  # "" is no key at all
        out.append(Poison("hostile id as key", bad, chunk(bad, 0), "frames", home(bad), reason))
    return out


def send_poisons(cfg: PipelineConfig, bootstrap: str, cameras: list[str]) -> dict[str, Poison]:
    """Produce the poisons; each by its place in the frames topic (``topic/partition/offset``,
    what its dead letter's source header names)."""
    producer = kafka.make_producer(cfg.kafka, bootstrap)
    sent = {}
    for p in poisons(cameras, cfg.kafka.partitions):
        meta = producer.send(
            cfg.kafka.frames_topic,
            key=None if p.key is None else p.key.encode(),
            value=p.value,
            headers=[(records.KIND_HEADER, p.header.encode())],
            partition=p.partition,
        ).get(timeout=60)
        sent[f"{cfg.kafka.frames_topic}/{meta.partition}/{meta.offset}"] = p
    producer.close()
    return sent


# -- watching the output -------------------------------------------------------------------
PART = re.compile(r"frames/stream_id=([^/]+)/date=[^/]+/part-\d+-(\d+)\.parquet$")


class OutputWatch(threading.Thread):
    """Lists the store's ``frames`` dataset every half second (straight from moto, not
    through the proxy): per camera, the last frame of its newest Parquet window, and when
    each listing finished. A listing fails while the store is away."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.history: list[tuple[float, dict[str, int]]] = []
        self.done = threading.Event()

    def newest(self) -> dict[str, int]:
        """Per camera, the last frame of its newest window in the store now."""
        out: dict[str, int] = {}
        for key in self.store.list("frames/"):
            if m := PART.search(key):
                out[m[1]] = max(out.get(m[1], -1), int(m[2]))
        return out

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                self.history.append((time.monotonic(), self.newest()))
            except Exception:  # the store is away
                continue

    def wait_for(self, cameras: list[str], timeout_s: float) -> None:
        """Until every camera has a window in the store (it has frames in its worker)."""
        deadline = time.monotonic() + timeout_s
        while not self.history or not set(cameras) <= set(self.history[-1][1]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no window of every camera after {timeout_s:.0f} s")
            time.sleep(0.5)

    def resumed_at(self, stream: str, after: float, beyond: int) -> float | None:
        """When a window past frame ``beyond`` first showed, in a listing after ``after``."""
        for at, newest in list(self.history):
            if at > after and newest.get(stream, -1) > beyond:
                return at
        return None


@dataclass
class Fault:
    """A fault's end: when, and each camera's newest window then (read after it ended)."""

    name: str
    ended: float
    newest: dict[str, int]


def fault_ended(name: str, watch: OutputWatch) -> Fault:
    ended = time.monotonic()
    deadline = ended + 60
    while True:  # the store answers again (the store outage) or never left
        try:
            return Fault(name, ended, watch.newest())
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def with_work(fault: Fault, cameras: list[str], frames: int) -> list[str]:
    """The cameras whose output did not hold every frame when the fault ended."""
    return [s for s in cameras if fault.newest.get(s, -1) < frames - 1]


def stall(fault: Fault, watch: OutputWatch, cameras: list[str], frames: int) -> float | None:
    """The longest time from the fault's end to a camera's next new window, over the cameras
    with work; ``None`` if one never got one."""
    waits = []
    for s in with_work(fault, cameras, frames):
        at = watch.resumed_at(s, fault.ended, fault.newest.get(s, -1))
        if at is None:
            return None
        waits.append(at - fault.ended)
    return max(waits, default=0.0)


def wait_resumed(
    fault: Fault, watch: OutputWatch, cameras: list[str], frames: int, timeout_s: float
) -> None:
    """Until every camera with work has new output after the fault, or ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while stall(fault, watch, cameras, frames) is None and time.monotonic() < deadline:
        time.sleep(0.5)


# -- the report ----------------------------------------------------------------------------
@dataclass
class FaultReport:
    streams: int
    workers: int
    frames: int
    """Per camera."""
    frames_lost: int
    missing: dict[str, str]
    """Per camera that lost frames, which, and which of them never reached the frames topic
    (lost before the workers) and how many gaps its worker saw."""
    rows_duplicated: dict[str, int]
    """Per output: Parquet ``frames`` rows, Parquet ``tracks`` rows, tracks-topic rows."""
    poisons_sent: dict[str, int]
    dead_letters: dict[str, int]
    """Per poison kind, the records of that kind dead-lettered with their reason (each once,
    however often a replay dead-lettered it again)."""
    reasons: dict[str, str]
    unexpected_dead_letters: list[str]
    """Dead letters of records that were no poison, or with a reason over 4 KiB."""
    stalls: dict[str, float | None]
    """Per fault, the longest seconds from its end to new output of a camera with work."""
    errors_seen: dict[str, int]
    """Per outage, the failed calls the workers counted by its recovery (for information: a
    store call black-holed for less than its timeouts, 10 s x 3 tries, may not have failed
    yet when the outage ends)."""
    recovered_streams: int
    """Streams restored from a checkpoint (after the SIGKILL)."""
    stray_keys: list[str]
    equal: bool
    seconds: float

    @property
    def longest_stall_s(self) -> float:
        return max((s if s is not None else float("inf") for s in self.stalls.values()), default=0)

    def problems(self) -> list[str]:
        """What missed a target, in words; empty when the run met them all."""
        out = []
        if self.frames_lost:
            out.append(f"{self.frames_lost} frames lost")
        if sum(self.rows_duplicated.values()):
            out.append(f"rows duplicated: {self.rows_duplicated}")
        missed = {k: n for k, n in self.poisons_sent.items() if self.dead_letters.get(k, 0) < n}
        if missed:
            out.append(f"poisons not dead-lettered with their reason: {missed}")
        if self.unexpected_dead_letters:
            out.append(f"unexpected dead letters: {self.unexpected_dead_letters[:5]}")
        for name, s in self.stalls.items():
            if s is None or s >= STALL_TARGET_S:
                out.append(
                    f"after the {name}: "
                    + ("a camera's output never resumed" if s is None else f"stalled {s:.1f} s")
                )
        if not self.recovered_streams:
            out.append("the SIGKILL hit no stream in flight")
        if self.stray_keys:
            out.append(f"keys written outside the store's layout: {self.stray_keys[:5]}")
        if not self.equal:
            out.append("the output differs from the run without faults")
        return out

    def __str__(self) -> str:
        width = max(map(len, self.poisons_sent))
        lines = [
            f"fault run              {self.streams} cameras x {self.frames} frames over "
            f"{self.workers} workers, {self.seconds:.0f} s",
            f"frames lost            {self.frames_lost}",
            *(f"  {cam}: {what}" for cam, what in self.missing.items()),
            f"rows duplicated        {sum(self.rows_duplicated.values())} "
            f"({', '.join(f'{k} {v}' for k, v in self.rows_duplicated.items())})",
            "dead letters by reason (dead-lettered / sent)",
            *(
                f"  {k:<{width}}  {self.dead_letters.get(k, 0)}/{n}  ({self.reasons[k]!r})"
                for k, n in self.poisons_sent.items()
            ),
            f"  {'unexpected':<{width}}  {len(self.unexpected_dead_letters)}",
            f"longest stall          {self.longest_stall_s:.1f} s ("
            + ", ".join(
                f"{name} {'never resumed' if s is None else f'{s:.1f} s'}"
                for name, s in self.stalls.items()
            )
            + f"; target under {STALL_TARGET_S:.0f} s after each)",
            "failures counted       "
            + ", ".join(f"{name} {n}" for name, n in self.errors_seen.items())
            + " (by the workers, for information)",
            f"streams recovered      {self.recovered_streams} (from checkpoints: the SIGKILL)",
            f"stray keys             {len(self.stray_keys)}",
            f"output equals the run without faults: {'yes' if self.equal else 'NO'}",
        ]
        problems = self.problems()
        lines.append("targets met" if not problems else "MISSED: " + "; ".join(problems))
        return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------
def cameras(cfg: PipelineConfig, bootstrap: str, videos: dict[str, Path]) -> dict[str, IngestJob]:
    """The videos as live cameras: at their own frame rate, with the product's reconnect
    settings, stamped with the reference run's capture clock."""
    jobs = {}
    for sid, path in videos.items():
        jobs[sid] = IngestJob(
            sid, str(path), (128, 128), cfg.kafka, bootstrap, IngestConfig(pace=True)
        )
        jobs[sid].ingest.clock = lambda: CAPTURE_START_NS
    return jobs


def errors_counted(pool: WorkerPool, what: str) -> int:
    """The failures of the store or the brokers the workers have counted so far."""
    return sum(getattr(w, f"{what}_errors") for w in pool.status().workers)


def most_loaded(pool: WorkerPool, cameras: list[str], partitions: int) -> str:
    """The worker whose partitions hold the most cameras."""
    held = {
        name: sum(kafka.partition_for(c, partitions) in ps for c in cameras)
        for name, ps in pool.assignment().items()
    }
    return max(held, key=held.__getitem__)


def dead_letters(
    broker: EmbeddedBroker, cfg: PipelineConfig, sent: dict[str, Poison]
) -> tuple[dict[str, int], list[str]]:
    """Per poison kind, the poisons dead-lettered with their reason (a replay may dead-letter
    one again: each counts once); and the dead letters that should not be."""
    caught: dict[str, set[str]] = {}
    unexpected = []
    for msg in consume(broker, cfg.kafka.dead_letter_topic, cfg.kafka.partitions, cfg.kafka):
        headers = dict(msg.headers)
        source = headers.get(SOURCE_HEADER, b"").decode()
        error = headers.get(ERROR_HEADER, b"")
        reason = error.decode(errors="replace")
        poison = sent.get(source)
        if len(error) > kafka.MAX_ERROR_HEADER_BYTES:
            unexpected.append(f"{source}: a reason of {len(error)} bytes")
        if poison is None:
            unexpected.append(f"{source}: {reason[:160]}")
        elif poison.reason in reason:
            caught.setdefault(poison.kind, set()).add(source)
        else:
            unexpected.append(f"{source} ({poison.kind}): {reason[:160]}")
    return {kind: len(sources) for kind, sources in caught.items()}, unexpected


def duplicates(table: pa.Table, key: list[str]) -> int:
    """Rows past the first with the same key."""
    return table.num_rows - len(set(zip(*(table[k].to_pylist() for k in key), strict=True)))


def frames_done(store: ObjectStore, cams: list[str]) -> dict[str, set[int]]:
    """Per camera, the frames the output's ``frames`` dataset has a row for."""
    table = read_dataset(store, "frames")
    done: dict[str, set[int]] = {c: set() for c in cams}
    for sid, idx in zip(
        table["stream_id"].to_pylist(), table["frame_idx"].to_pylist(), strict=True
    ):
        done.setdefault(sid, set()).add(idx)
    return done


def frames_sent(
    broker: EmbeddedBroker, cfg: PipelineConfig, cams: list[str]
) -> dict[str, set[int]]:
    """Per camera, the frames its chunks in the frames topic hold (poisons left out): what
    reached the workers' input, to tell a frame the workers lost from one that never came."""
    sent: dict[str, set[int]] = {c: set() for c in cams}
    for msg in consume(broker, cfg.kafka.frames_topic, cfg.kafka.partitions, cfg.kafka):
        key = (msg.key or b"").decode(errors="replace")
        if key not in sent or kafka.header(msg.headers, records.KIND_HEADER) != "frames":
            continue
        try:
            sent[key].update(records.decode("frames", msg.value or b"", key).frame_idx.tolist())
        except RecordError:
            continue  # a poison
    return sent


def missing_frames(
    done: dict[str, set[int]],
    sent: dict[str, set[int]],
    every: set[int],
    summary: PoolStatus,
    jobs: dict[str, IngestJob],
) -> dict[str, str]:
    """Per camera that lost frames, which; which of them never reached the frames topic
    (lost before the workers); the gaps its worker saw; how often its ingest started again
    from what the topic held."""
    out = {}
    for cam, got in done.items():
        if every - got:
            gaps = summary.streams[cam].gaps if cam in summary.streams else "?"
            restarts = sum("starting again" in d for d in jobs[cam].report().drops)
            out[cam] = (
                f"{ranges(every - got)} (never in the frames topic: "
                f"{ranges(every - sent[cam]) or 'none'}; gaps its worker saw: {gaps}; its "
                f"ingest started again from the topic {restarts} times)"
            )
    return out


def ranges(frames: set[int]) -> str:
    """``{3, 4, 5, 9}`` as ``3-5, 9``."""
    out, run = [], []
    for i in sorted(frames):
        if run and i != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def stray_keys(bucket_store: ObjectStore, cams: list[str]) -> list[str]:
    """Keys outside the layout, or naming a stream that is no camera (hostile ids)."""
    named = re.compile(r"(?:checkpoints/|stream_id=)([^/]+)/")
    return [
        key
        for key in bucket_store.list("")
        if not LAYOUT.match(key) or any(m not in cams for m in named.findall(key))
    ]


FETCH_WAIT_MS = 1000
"""The fault run's ``kafka.fetch_max_wait_ms``. Tansu answers a fetch within this wait or
with no records, and with its log kept in S3 a fetch lists the partition's objects first:
at the default 50 ms, once a partition holds about 400 records (on moto), no fetch ever
brings a record and every consumer starves without an error."""


@dataclass
class Rig:
    """What the runs use, on 127.0.0.1: for the run without faults, a broker in memory; for
    the fault run, one whose log lives in S3 (a moto server in a process of its own, never
    away) so that it can stop and start again without losing a record; and the object
    store, a moto server here, reached by the fault run through a proxy that black-holes
    it."""

    reference_broker: EmbeddedBroker
    broker: EmbeddedBroker
    store: Moto
    proxy: StoreProxy

    @classmethod
    def start(cls, stack: ExitStack) -> Rig:
        reference_broker = stack.enter_context(EmbeddedBroker())
        broker = log_keeping_broker(stack.enter_context(moto_process()))
        stack.callback(broker.stop)
        store = Moto()
        stack.callback(store.stop)
        proxy = StoreProxy(store.port)
        stack.callback(proxy.close)
        return cls(reference_broker, broker, store, proxy)

    def config(self, weights: Path, parquet_frames: int, faults: bool) -> PipelineConfig:
        """Fresh topics and a fresh bucket; the store at the product's default timeouts."""
        broker = self.broker if faults else self.reference_broker
        storage = s3_storage(self.proxy.url if faults else self.store.url, f"f-{uuid.uuid4().hex}")
        cfg = pipeline_config(broker, weights, storage, parquet_frames=parquet_frames)
        if faults:
            cfg = dataclasses.replace(
                cfg, kafka=dataclasses.replace(cfg.kafka, fetch_max_wait_ms=FETCH_WAIT_MS)
            )
        kafka.ensure_topics(cfg.kafka, broker.bootstrap)
        return cfg

    def store_down(self) -> None:
        self.proxy.black_hole()  # calls in flight and new ones hang until their timeouts
        self.store.stop()

    def store_up(self) -> None:
        self.store.start()
        self.proxy.restore()

    def direct(self, storage: StorageConfig, whole_bucket: bool = False) -> ObjectStore:
        """The store straight from moto (not through the proxy), or its whole bucket."""
        storage = dataclasses.replace(storage, endpoint=self.store.url)
        if whole_bucket:
            storage = dataclasses.replace(storage, url=storage.url.rsplit("/", 1)[0])
        return open_store(storage)


def run_faults(settings: FaultSettings, say: Callable[[str], None] = print) -> FaultReport:
    """The run without faults, then the fault run, and how they compare. Ray must be
    initialised (a CPU per worker); everything else is started here and stopped on the way
    out."""
    frames = settings.frame_count()
    began = time.monotonic()

    def note(what: str) -> None:
        say(f"{time.monotonic() - began:5.0f} s  {what}")

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        weights = settings.weights or write_random_weights(tmp)
        rig = Rig.start(stack)
        broker = rig.broker
        videos = write_videos(tmp / "videos", settings.streams, frames, settings.fps)
        cams = sorted(videos)

        note(f"the run without faults: {len(cams)} cameras x {frames} frames")
        reference = rig.config(weights, settings.parquet_frames, faults=False)
        ingest_all(reference, rig.reference_broker, videos, frames)
        run_workers(reference, rig.reference_broker, set(cams), settings.workers, 3600)

        note("the fault run: cameras at their own pace")
        cfg = rig.config(weights, settings.parquet_frames, faults=True)
        watch = OutputWatch(rig.direct(cfg.storage))
        watch.start()
        stack.callback(watch.done.set)
        started = time.monotonic()
        pool = WorkerPool.start(cfg, broker.bootstrap, settings.workers)
        stack.callback(pool.kill)
        run = pool.run(until_ended=set(cams), max_seconds=3600)
        jobs = cameras(cfg, broker.bootstrap, videos)
        ingesting = [threading.Thread(target=job.run, daemon=True) for job in jobs.values()]
        for t in ingesting:
            t.start()
        watch.wait_for(cams, timeout_s=120)

        sent = send_poisons(cfg, broker.bootstrap, cams)
        note(f"{len(sent)} poison records and hostile ids sent")
        faults, errors = [], {}
        for name, outage_s, down, up, service in [
            ("store outage", settings.store_outage_s, rig.store_down, rig.store_up, "store"),
            ("broker outage", settings.broker_outage_s, broker.stop, broker.start, "broker"),
        ]:
            time.sleep(settings.settle_s)
            note(f"{name} for {outage_s:.0f} s")
            down()
            time.sleep(outage_s)
            up()
            faults.append(fault_ended(name, watch))
            wait_resumed(faults[-1], watch, cams, frames, settings.recover_timeout_s)
            errors[name] = errors_counted(pool, service)  # before the kill resets a worker's
            note(f"every camera's output resumed; the workers counted {errors[name]} failures")
        time.sleep(settings.settle_s)
        victim = most_loaded(pool, cams, cfg.kafka.partitions)
        note(f"SIGKILL of {victim}")
        sigkill(pool.workers()[victim])
        faults.append(fault_ended("worker SIGKILL", watch))
        for t in ingesting:
            t.join(3600)
        summary = ray.get(run, timeout=3600)
        seconds = time.monotonic() - started
        watch.done.set()
        note("done; comparing")

        got, want = open_store(cfg.storage), open_store(reference.storage)
        done, every = frames_done(got, cams), set(range(frames))
        caught, unexpected = dead_letters(broker, cfg, sent)
        topic = topic_rows(broker, cfg)[0]
        topic_want = topic_rows(rig.reference_broker, reference)[0]
        reasons: dict[str, set[str]] = {}
        for p in sent.values():
            reasons.setdefault(p.kind, set()).add(p.reason)
        return FaultReport(
            streams=len(cams),
            workers=settings.workers,
            frames=frames,
            frames_lost=sum(len(every - done[cam]) for cam in cams),
            missing=missing_frames(done, frames_sent(broker, cfg, cams), every, summary, jobs),
            rows_duplicated={
                "Parquet frames": duplicates(read_dataset(got, "frames"), KEY[:2]),
                "Parquet tracks": duplicates(read_dataset(got), KEY),
                "tracks topic": duplicates(topic, KEY),
            },
            poisons_sent=dict(Counter(p.kind for p in sent.values())),
            dead_letters=caught,
            reasons={kind: " | ".join(sorted(r)) for kind, r in reasons.items()},
            unexpected_dead_letters=unexpected,
            stalls={f.name: stall(f, watch, cams, frames) for f in faults},
            errors_seen=errors,
            recovered_streams=summary.recovered_streams,
            stray_keys=stray_keys(rig.direct(cfg.storage, whole_bucket=True), cams),
            equal=dataset_files(got) == dataset_files(want) and topic.equals(topic_want),
            seconds=seconds,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store-outage-s", type=float, default=60.0)
    parser.add_argument("--broker-outage-s", type=float, default=90.0)
    parser.add_argument("--frames", type=int, default=None, help="per camera (default: enough)")
    parser.add_argument("--fps", type=int, default=8, help="the cameras' frame rate")
    parser.add_argument("--weights", type=Path, default=None, help="default: random tiny")
    args = parser.parse_args()
    for noisy in ("werkzeug", "kafka"):  # moto's per-request lines; clients during the outage
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    settings = FaultSettings(
        store_outage_s=args.store_outage_s,
        broker_outage_s=args.broker_outage_s,
        frames=args.frames,
        fps=args.fps,
        weights=args.weights,
    )
    ray.init(
        num_cpus=settings.workers,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        report = run_faults(settings)
    finally:
        ray.shutdown()
    print(report)
    sys.exit(0 if not report.problems() else 1)


if __name__ == "__main__":
    main()
