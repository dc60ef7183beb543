"""End-to-end pipeline throughput vs. the bare model loop, and Kafka chunk throughput.

    .venv/bin/python bench/pipeline.py                       # 4 streams x 128 frames
    .venv/bin/python bench/pipeline.py --streams 2 --frames 32

1. Bare model loop: the same frames, decoded up front, stepped in batches over all streams
   in one process; the faster of the default threading and one lane per core. This is the
   issue's baseline: the model run by hand, without the pipeline.
2. The bare model split as the pipeline's workers split the streams: one process per
   worker, one torch thread each, stepping its streams together. The pipeline's layout
   without the pipeline: the ratio against it is the cost of ingest, Kafka and the sinks
   alone.
3. End to end: H.264 files -> ingest (one thread per stream) -> embedded Kafka broker ->
   SegmentationWorker Ray actors (the default pool: one per core) -> Parquet + tracks
   topic; frames/s from the first frame produced to the last frame written. Target: at
   least 0.85 of the bare loop. Also each worker's utilisation: the model step's share of
   its run's wall time, and the cores its process kept busy. Ingest and the broker share
   the same 2 cores.
4. Kafka: frame chunks (8 frames) produced and consumed through the broker, in MB/s of
   message bytes.

Rounds of 1-3 alternate on one broker and Ray (each end-to-end round with fresh workers
and frames topic) and medians are reported, with each round's ratios: on these machines one
run of any of them can be 10% off.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import numpy as np
import ray
import torch
from tqdm import tqdm

from ausm_stream.deploy.runtime import Runtime, start_runtime
from ausm_stream.model import load_model
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.model.versions import weights_info
from ausm_stream.operators.coordinator import owned_streams, split_partitions, worker_count
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.ingest import Ingest, decode_source
from ausm_stream.pipeline.video_files import write_h264


def prepare_bare(
    weights: str, videos: dict[str, Path], size: tuple[int, int], lanes: int = 1
) -> Callable[[], int]:
    """The untimed part of a bare run: the model loaded and warmed up, the frames decoded.
    Returns the timed part, which steps every stream's frames in batches and returns how
    many frames it stepped."""
    model, _ = load_model(weights, step_lanes=lanes)
    stacks = [np.stack([d.rgb for d in decode_source(str(p), size)]) for p in videos.values()]
    model.warm_up(streams=len(stacks))  # as the worker does before its first frame
    states = [model.init_state(seed=i) for i in range(len(stacks))]
    n = min(len(f) for f in stacks)

    def run() -> int:
        for t in range(n):
            model.step(states, torch.from_numpy(np.stack([f[t] for f in stacks])))
        return n * len(stacks)

    return run


def bare_loop(weights: str, videos: dict[str, Path], size: tuple[int, int], lanes: int) -> float:
    """The model alone over the decoded frames. ``lanes`` > 1 is the worker's configuration
    (one torch thread per lane); 1 is the plain default (all threads on every op)."""
    threads = torch.get_num_threads()
    if lanes > 1:
        torch.set_num_threads(1)
    run = prepare_bare(weights, videos, size, lanes)
    start = time.perf_counter()
    fps = run() / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    return fps


def bare_processes(
    weights: str, videos: dict[str, Path], size: tuple[int, int], groups: list[set[str]]
) -> float:
    """The model alone in one process per group of streams (the pool's split), one torch
    thread each, stepping together: the pipeline's worker layout without the pipeline."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(groups)), ctx.Queue()
    procs = [
        ctx.Process(
            target=_bare_process,
            args=(weights, {s: videos[s] for s in sorted(g)}, size, barrier, results),
        )
        for g in groups
    ]
    for p in procs:
        p.start()
    done = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    frames = sum(n for n, _, _ in done)
    return frames / (max(end for _, _, end in done) - min(start for _, start, _ in done))


def _bare_process(
    weights: str,
    videos: dict[str, Path],
    size: tuple[int, int],
    barrier: mp.synchronize.Barrier,
    results: mp.queues.Queue,
) -> None:
    torch.set_num_threads(1)
    run = prepare_bare(weights, videos, size)
    barrier.wait()
    start = time.monotonic()
    frames = run()
    results.put((frames, start, time.monotonic()))


def end_to_end(
    rt: Runtime, cfg: PipelineConfig, videos: dict[str, Path], size: tuple[int, int], frames: int
) -> tuple[float, dict]:
    """Frames/s end to end, and the pool's summary (its workers' utilisation). Fresh workers
    and frames topic, so a round reads only its own records."""
    kafka.ensure_topics(cfg.kafka, rt.bootstrap)
    pool = WorkerPool.start(cfg, rt.bootstrap)
    pool.status()  # the actors are up and their models loaded
    producer = kafka.make_producer(cfg.kafka, rt.bootstrap)
    start = time.perf_counter()
    run = pool.run(until_ended=set(videos), max_seconds=1800)
    jobs = [Ingest(sid, str(p), size, producer, cfg.kafka, cfg.ingest) for sid, p in videos.items()]
    threads = [threading.Thread(target=j.run) for j in jobs]
    for t in threads:
        t.start()
    summary = ray.get(run)
    elapsed = time.perf_counter() - start
    for t in threads:
        t.join()
    producer.close()
    pool.kill()
    done = sum(s.frames_out for s in summary.streams.values())
    assert done == frames * len(videos), summary
    return done / elapsed, summary


def kafka_throughput(
    rt: Runtime, cfg: PipelineConfig, chunks: int, size: tuple[int, int]
) -> tuple[float, float]:
    video = generate_video("test", 7, ShapesSpec(size=size, frames=8))
    chunk = records.FrameChunk(
        "bench", np.arange(8), np.arange(8), np.arange(8) + 10**18, size[0], size[1], video.frames
    )
    value = records.encode_frames(chunk)
    kafka.ensure_topics(cfg.kafka, rt.bootstrap)
    producer = kafka.make_producer(cfg.kafka, rt.bootstrap)
    start = time.perf_counter()
    for _ in range(chunks):
        kafka.send(producer, cfg.kafka.frames_topic, "bench", value, "frames", partition=0)
    producer.flush()
    produced = chunks * len(value) / 1e6 / (time.perf_counter() - start)
    consumer = kafka.make_consumer(cfg.kafka, rt.bootstrap)
    kafka.assign(consumer, cfg.kafka.frames_topic, [0])
    start = time.perf_counter()
    got = 0
    while got < chunks:
        for msgs in consumer.poll(timeout_ms=1000).values():
            got += len(msgs)
    consumed = chunks * len(value) / 1e6 / (time.perf_counter() - start)
    consumer.close()
    producer.close()
    return produced, consumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--weights", default="default")
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    _, version = weights_info(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = ShapesSpec(size=(192, 320), frames=args.frames, min_radius=14, max_radius=36)
        videos = {
            f"cam-{i}": write_h264(
                root / f"cam-{i}.mp4", generate_video("test", 500 + i, spec).frames
            )
            for i in range(args.streams)
        }
        size = (128, 128)
        bare, split, e2e, workers = [], [], [], []
        base = config(root, args.weights, "base")
        with start_runtime(base) as rt:
            count = worker_count(base, ray.cluster_resources())
            ranges = split_partitions(base.kafka.partitions, count)
            # A worker whose partitions got no stream idles: no process for it.
            groups = [g for r in ranges if (g := owned_streams(set(videos), r, base))]
            for r in tqdm(range(args.rounds), desc="rounds", unit="round", leave=False):
                # The faster of the two ways to run the bare model in one process.
                bare.append(
                    max(
                        bare_loop(args.weights, videos, size, lanes)
                        for lanes in (1, os.cpu_count() or 1)
                    )
                )
                split.append(bare_processes(args.weights, videos, size, groups))
                fps, worker = end_to_end(
                    rt, config(root, args.weights, f"r{r}"), videos, size, args.frames
                )
                e2e.append(fps)
                workers.append(worker)
            produced, consumed = kafka_throughput(
                rt, config(root, args.weights, "kafka"), args.chunks, size
            )
    ratios = [e / b for e, b in zip(e2e, bare, strict=True)]
    print(f"model {version}, {args.streams} streams x {args.frames} frames, {args.rounds} rounds")
    split_ratios = [e / b for e, b in zip(e2e, split, strict=True)]
    print(f"bare model loop        {median(bare):8.1f} frames/s   (median; one process)")
    print(
        f"bare, split as workers {median(split):8.1f} frames/s   (median; one process per "
        f"worker: {[sorted(g) for g in groups]})"
    )
    print(
        f"end to end (Kafka+Ray) {median(e2e):8.1f} frames/s   ratio {median(ratios):.2f} "
        f"(median of rounds: {', '.join(f'{r:.2f}' for r in ratios)}; target 0.85); "
        f"{median(split_ratios):.2f} of the split bare model "
        f"({', '.join(f'{r:.2f}' for r in split_ratios)})"
    )
    per_worker = [w for summary in workers for w in summary.workers]
    busy = [w.step_seconds / w.run_seconds for w in per_worker]
    cores = [w.cpu_seconds / w.run_seconds for w in per_worker]
    print(
        f"workers                {len(workers[0].workers)}, partitions "
        f"{[w.partitions for w in workers[0].workers]}: model step {100 * median(busy):.0f}% "
        f"of a worker's run, its process CPU {median(cores):.2f} cores (medians)"
    )
    print(
        f"Kafka frame chunks     produce {produced:.1f} MB/s, consume {consumed:.1f} MB/s "
        f"({args.chunks} chunks of 8 frames at {size[0]}x{size[1]})"
    )


def config(root: Path, weights: str, run: str) -> PipelineConfig:
    """The embedded pipeline; each run gets its own frames topic."""
    return PipelineConfig.from_dict(
        {
            "storage": {"url": f"file://{root / 'store' / run}"},
            "model": {"weights": weights},
            "kafka": {"frames_topic": f"bench.frames.{run}"},
        }
    )


if __name__ == "__main__":
    main()
