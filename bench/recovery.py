"""Checkpoints and recovery: what they cost and how fast a stream comes back.

    .venv/bin/python bench/recovery.py                     # everything (~6 minutes)
    .venv/bin/python bench/recovery.py --soak-kills 0      # without the soak

1. Checkpoint bytes per stream (the shipped model, a stream with tracks and half a Parquet
   window buffered) and the time to write one, to a local directory and to an S3 endpoint
   (a moto server on loopback, through the minio client).
2. Throughput with checkpoints at the default cadence vs. none (only the final one): the
   frames topic is filled first, then the workers are timed from start to the last stream's
   end. Rounds alternate and medians are reported. Target: at least 0.97.
3. SIGKILL of a worker mid-run, three times: seconds from the kill to the first tracks
   message the restarted worker sends for the streams it owns (model load included; target
   at most 10 s), and the frames it stepped again (the frames done at the kill minus the
   frame its checkpoint resumed at).
4. Soak: 4 streams ingested by Ray actors at the files' frame rate, 2 workers, SIGKILLs at
   random moments (workers and ingest actors). Frames lost, Parquet rows duplicated, tracks
   rows duplicated once replayed messages are dropped by their headers, and whether the
   output equals a run without kills (rows compared without capture_ts, which follows each
   run's ingest clock). Target: 0, 0, 0, yes.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path
from statistics import mean, median

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from tqdm import tqdm

from ausm_stream.deploy.runtime import Runtime, start_runtime
from ausm_stream.model import load_model
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.operators.checkpoint import Checkpoint, CheckpointStore, encode
from ausm_stream.operators.ingest_pool import IngestPlacement
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.operators.processor import StreamProcessor
from ausm_stream.pipeline import kafka, records, tracks
from ausm_stream.pipeline.broker import free_port
from ausm_stream.pipeline.config import PipelineConfig, StorageConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.ingest import Ingest
from ausm_stream.pipeline.sinks import ParquetSink
from ausm_stream.pipeline.storage import ObjectStore, open_store
from ausm_stream.pipeline.video_files import write_h264

SIZE = (128, 128)
KEY = ["stream_id", "frame_idx", "track_id"]


def write_videos(root: Path, streams: int, frames: int) -> dict[str, Path]:
    spec = ShapesSpec(size=(192, 320), frames=frames, min_radius=14, max_radius=36)
    return {
        f"cam-{i}": write_h264(root / f"cam-{i}.mp4", generate_video("test", 500 + i, spec).frames)
        for i in range(streams)
    }


def config(
    root: Path, weights: str, run: str, ingest: dict | None = None, **worker: object
) -> PipelineConfig:
    """The embedded pipeline; each run gets its own topics and store."""
    return PipelineConfig.from_dict(
        {
            "storage": {"url": f"file://{root / 'store' / run}"},
            "model": {"weights": weights},
            "kafka": {"frames_topic": f"frames.{run}", "tracks_topic": f"tracks.{run}"},
            "ingest": ingest or {},
            "worker": worker,
        }
    )


# -- 1. checkpoint size and write time ---------------------------------------------------
def checkpoint_cost(weights: str, stores: dict[str, ObjectStore], writes: int) -> None:
    model, version = load_model(weights)
    video = generate_video("test", 3, ShapesSpec(size=SIZE, frames=40))
    sinks = {name: ParquetSink(store, version, 64) for name, store in stores.items()}
    first = next(iter(sinks.values()))
    proc = StreamProcessor(model, lambda f: first.add(f, tracks.encode_tracks([f], version)))
    chunk = records.FrameChunk(
        "cam", np.arange(40), np.arange(40), np.arange(40) + 10**18, 128, 128, video.frames
    )
    proc.on_record(chunk, 0)
    proc.drain()
    ckpt = Checkpoint(proc.snapshot("cam", 1), {"parquet": first.pending("cam")})
    blob = encode(ckpt, version)
    state = len(ckpt.snapshot.state.to_bytes())
    print(
        f"checkpoint per stream  {len(blob) / 1e6:.2f} MB ({state / 1e6:.2f} MB model state, "
        f"the rest the buffered rows of 40 frames, {len(ckpt.snapshot.state.active_track_ids)} "
        "tracks)"
    )
    for name, store in stores.items():
        ckpts = CheckpointStore(store, model.cfg, version)
        times = []
        for _ in range(writes):
            start = time.perf_counter()
            ckpts.write(ckpt, "t", 0)
            times.append(time.perf_counter() - start)
        print(
            f"  write to {name:<13}{1000 * median(times):7.1f} ms median, "
            f"{1000 * max(times):.1f} ms max ({writes} writes: object, manifest, latest, prune)"
        )


# -- 2. throughput with and without checkpoints -----------------------------------------
def fill_topic(rt: Runtime, cfg: PipelineConfig, videos: dict[str, Path]) -> int:
    kafka.ensure_topics(cfg.kafka, rt.bootstrap)
    producer = kafka.make_producer(cfg.kafka, rt.bootstrap)
    jobs = [Ingest(s, str(p), SIZE, producer, cfg.kafka, cfg.ingest) for s, p in videos.items()]
    threads = [threading.Thread(target=j.run) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    producer.close()
    return sum(j.report.frames for j in jobs)


def timed_run(rt: Runtime, cfg: PipelineConfig, videos: dict[str, Path]) -> tuple[float, dict]:
    frames = fill_topic(rt, cfg, videos)
    pool = WorkerPool.start(cfg, rt.bootstrap)
    pool.status()  # models loaded
    start = time.perf_counter()
    summary = ray.get(pool.run(until_ended=set(videos), max_seconds=1800))
    elapsed = time.perf_counter() - start
    pool.kill()
    return frames / elapsed, summary


def throughput(rt: Runtime, root: Path, weights: str, videos: dict, rounds: int) -> None:
    never = {"checkpoint_frames": 10**9, "checkpoint_seconds": 1e9}
    with_ckpt, without, written = [], [], []
    for r in tqdm(range(rounds), desc="throughput rounds", unit="round", leave=False):
        fps, summary = timed_run(rt, config(root, weights, f"ckpt{r}"), videos)
        with_ckpt.append(fps)
        written.append(summary.checkpoints_written)
        without.append(timed_run(rt, config(root, weights, f"none{r}", **never), videos)[0])
    ratios = [a / b for a, b in zip(with_ckpt, without, strict=True)]
    print(
        f"throughput             {median(with_ckpt):.1f} frames/s with checkpoints "
        f"({median(written):.0f} written), {median(without):.1f} without: ratio "
        f"{median(ratios):.3f} (rounds {', '.join(f'{x:.3f}' for x in ratios)}; target 0.97)"
    )


# -- 3. time from SIGKILL to new output -----------------------------------------------
class TrackTimes(threading.Thread):
    """Records (stream, first frame, broker timestamp in s) of every tracks message."""

    def __init__(self, rt: Runtime, cfg: PipelineConfig) -> None:
        super().__init__(daemon=True)
        self.consumer = kafka.make_consumer(cfg.kafka, rt.bootstrap)
        kafka.assign(self.consumer, cfg.kafka.tracks_topic, range(cfg.kafka.partitions))
        self.seen: list[tuple[str, int, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for msgs in self.consumer.poll(timeout_ms=100).values():
                for m in msgs:
                    sid, first, _, _ = tracks.track_message_id(m.headers)
                    self.seen.append((sid, int(first), m.timestamp / 1000))
        self.consumer.close()


def kill_latency(rt: Runtime, root: Path, weights: str, videos: dict, kills: int) -> None:
    cfg = config(root, weights, "kills")
    total = fill_topic(rt, cfg, videos)
    pool = WorkerPool.start(cfg, rt.bootstrap)
    pool.status()
    watch = TrackTimes(rt, cfg)
    watch.start()
    run = pool.run(until_ended=set(videos), max_seconds=1800)
    latencies, replayed = [], []
    for k in range(kills):
        at = total * (k + 1) // (kills + 2)
        while sum(s.frames_out for s in pool.status().streams.values()) < at:
            time.sleep(0.02)
        name = sorted(pool.workers())[k % 2]
        handle = pool.workers()[name]
        before = ray.get(handle.status.remote()).streams
        killed_at = time.time()
        os.kill(ray.get(handle.pid.remote()), signal.SIGKILL)
        while True:  # the restarted worker's first tracks message of its streams
            new = [t for s, _, t in list(watch.seen) if s in before and t > killed_at + 0.05]
            if new:
                latencies.append(min(new) - killed_at)
                break
            time.sleep(0.02)
        after = ray.get(handle.status.remote()).streams
        replayed.append(
            sum(before[s].frames_out - (after[s].resumed_at or 0) for s in before if s in after)
        )
    ray.get(run)
    watch.done.set()
    pool.kill()
    print(
        f"SIGKILL -> new output  {', '.join(f'{x:.1f}' for x in latencies)} s "
        f"(mean {mean(latencies):.1f}; target at most 10 s, model load included)"
    )
    print(
        f"frames replayed        {replayed} per recovery (over the killed worker's streams: "
        "frames done at the kill - the frame each resumed at)"
    )


# -- 4. soak --------------------------------------------------------------------------
def soak_run(
    rt: Runtime, cfg: PipelineConfig, videos: dict, kills: int, seed: int
) -> tuple[dict, int]:
    kafka.ensure_topics(cfg.kafka, rt.bootstrap)
    pool = WorkerPool.start(cfg, rt.bootstrap)
    pool.status()
    placement = IngestPlacement(cfg, rt.bootstrap, SIZE)
    ingests = [placement.start(s, str(p)) for s, p in videos.items()]
    run = pool.run(until_ended=set(videos), max_seconds=3600)
    rng = random.Random(seed)
    done = 0
    with tqdm(total=kills, desc="soak kills", unit="kill", leave=False) as bar:
        while done < kills:
            time.sleep(rng.uniform(1.5, 4.5))
            ready, _ = ray.wait([run], timeout=0)
            if ready:
                break
            if rng.random() < 0.3:  # the ingest process (all streams' ingest, pooled)
                target = ingests[0].process
            else:
                target = pool.workers()[rng.choice(sorted(pool.workers()))]
            try:
                os.kill(ray.get(target.pid.remote(), timeout=30), signal.SIGKILL)
            except (ray.exceptions.RayError, ProcessLookupError):
                continue  # still restarting from the last kill
            done += 1
            bar.update()
    summary = ray.get(run)
    ray.get([ing.run for ing in ingests])
    pool.kill()
    return summary, done


def soak(rt: Runtime, root: Path, weights: str, videos: dict, kills: int) -> None:
    frames = {s: frame_count(p) for s, p in videos.items()}
    reference = config(root, weights, "soak-ref")
    soak_run(rt, reference, videos, 0, 0)
    killed = config(root, weights, "soak", ingest={"pace": True})  # live-like, kills land
    _, done = soak_run(rt, killed, videos, kills, seed=1)
    ref_rows, rows = (rows_of(open_store(c.storage)) for c in (reference, killed))
    seen = read_dataset(open_store(killed.storage), "frames")
    lost = sum(
        n - len(set(seen.filter(pc.field("stream_id") == s)["frame_idx"].to_pylist()))
        for s, n in frames.items()
    )
    dup_parquet = rows.num_rows - len({tuple(r.values()) for r in rows.select(KEY).to_pylist()})
    topic = topic_rows(rt, killed)
    dup_topic = topic.num_rows - len({tuple(r.values()) for r in topic.select(KEY).to_pylist()})
    same = rows.equals(ref_rows) and topic.equals(rows.select(topic.column_names))
    print(
        f"soak                   {done} SIGKILLs (workers and ingest) over {len(videos)} streams "
        f"x {max(frames.values())} frames: {lost} frames lost, {dup_parquet} Parquet rows and "
        f"{dup_topic} tracks-topic rows duplicated, output equals the run without kills: "
        f"{'yes' if same else 'NO'}"
    )


def frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].frames


def rows_of(store: ObjectStore) -> pa.Table:
    table = read_dataset(store).drop_columns(["capture_ts", "date"])
    return table.sort_by([(k, "ascending") for k in KEY])


def topic_rows(rt: Runtime, cfg: PipelineConfig) -> pa.Table:
    consumer = kafka.make_consumer(cfg.kafka, rt.bootstrap)
    kafka.assign(consumer, cfg.kafka.tracks_topic, range(cfg.kafka.partitions))
    seen, batches, idle = set(), [], 0
    while idle < 3:
        polled = consumer.poll(timeout_ms=500)
        idle = 0 if polled else idle + 1
        for msgs in polled.values():
            for m in msgs:
                key = tracks.track_message_id(m.headers)
                if key not in seen:
                    seen.add(key)
                    batches.append(tracks.decode_tracks(m.value))
    consumer.close()
    table = pa.Table.from_batches(batches).drop_columns(["capture_ts"])
    return table.sort_by([(k, "ascending") for k in KEY])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--frames", type=int, default=128, help="per stream, rounds and kills")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--soak-kills", type=int, default=20)
    parser.add_argument("--soak-frames", type=int, default=480)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            s3 = StorageConfig(
                url="s3://bench/ckpt",
                endpoint=f"http://127.0.0.1:{port}",
                access_key="bench",
                secret_key="bench-secret",
            )
            stores = {
                "a directory": open_store(StorageConfig(url=f"file://{root / 'ckpt'}")),
                "S3 (moto)": open_store(s3),
            }
            checkpoint_cost(args.weights, stores, args.writes)
            videos = write_videos(root / "videos", args.streams, args.frames)
            with start_runtime(config(root, args.weights, "base")) as rt:
                throughput(rt, root, args.weights, videos, args.rounds)
                if args.kills:
                    long = write_videos(root / "long", args.streams, args.frames * 2)
                    kill_latency(rt, root, args.weights, long, args.kills)
                if args.soak_kills:
                    soak_videos = write_videos(root / "soak", args.streams, args.soak_frames)
                    soak(rt, root, args.weights, soak_videos, args.soak_kills)
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
