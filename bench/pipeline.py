"""End-to-end pipeline throughput vs. the bare model loop, and Kafka chunk throughput.

    .venv/bin/python bench/pipeline.py                       # 4 streams x 128 frames
    .venv/bin/python bench/pipeline.py --streams 2 --frames 32

1. Bare model loop: the same frames, decoded up front, stepped in batches over all streams
   as the worker batches them; the faster of the default threading and the worker's lanes.
2. End to end: H.264 files -> ingest (one thread per stream) -> embedded Kafka broker ->
   SegmentationWorker Ray actor -> Parquet + tracks topic; frames/s from the first frame
   produced to the last frame written. Target: at least 0.85 of the bare loop.
3. Kafka: frame chunks (8 frames) produced and consumed through the broker, in MB/s of
   message bytes.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import ray
import torch

from ausm_stream.deploy.runtime import start_runtime
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.operators.worker import load_model, start_worker, weights_info
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.ingest import Ingest, decode_source
from ausm_stream.pipeline.video_files import write_h264


def bare_loop(weights: str, videos: dict[str, Path], size: tuple[int, int], lanes: int) -> float:
    """The model alone over the decoded frames. ``lanes`` > 1 is the worker's configuration
    (one torch thread per lane); 1 is the plain default (all threads on every op)."""
    model, _ = load_model(weights, step_lanes=lanes)
    threads = torch.get_num_threads()
    if lanes > 1:
        torch.set_num_threads(1)
    frames = {
        sid: np.stack([d.rgb for d in decode_source(str(p), size)]) for sid, p in videos.items()
    }
    states = [model.init_state(seed=i) for i in range(len(frames))]
    stacks = list(frames.values())
    n = min(len(f) for f in stacks)
    start = time.perf_counter()
    for t in range(n):
        model.step(states, torch.from_numpy(np.stack([f[t] for f in stacks])))
    fps = n * len(stacks) / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    return fps


def end_to_end(
    cfg: PipelineConfig, videos: dict[str, Path], size: tuple[int, int], frames: int
) -> float:
    with start_runtime(cfg) as rt:
        worker = start_worker(cfg, rt.bootstrap, list(range(cfg.kafka.partitions)))
        ray.get(worker.summary.remote())  # the actor is up and the model loaded
        producer = kafka.make_producer(cfg.kafka, rt.bootstrap)
        start = time.perf_counter()
        run = worker.run.remote(until_ended=set(videos), max_seconds=1800)
        jobs = [
            Ingest(sid, str(p), size, producer, cfg.kafka, cfg.ingest) for sid, p in videos.items()
        ]
        threads = [threading.Thread(target=j.run) for j in jobs]
        for t in threads:
            t.start()
        summary = ray.get(run)
        elapsed = time.perf_counter() - start
        for t in threads:
            t.join()
    done = sum(s["frames"] for s in summary["streams"].values())
    assert done == frames * len(videos), summary
    return done / elapsed


def kafka_throughput(
    cfg: PipelineConfig, chunks: int, size: tuple[int, int]
) -> tuple[float, float]:
    video = generate_video("test", 7, ShapesSpec(size=size, frames=8))
    chunk = records.FrameChunk(
        "bench", np.arange(8), np.arange(8), np.arange(8) + 10**18, size[0], size[1], video.frames
    )
    value = records.encode_frames(chunk)
    with start_runtime(cfg) as rt:
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
    return produced, consumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--weights", default="default")
    parser.add_argument("--chunks", type=int, default=200)
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
        cfg = PipelineConfig.from_dict(
            {"storage": {"url": f"file://{root / 'store'}"}, "model": {"weights": args.weights}}
        )
        size = (128, 128)
        # The faster of the two ways to run the bare model is the baseline.
        bare = max(bare_loop(args.weights, videos, size, lanes) for lanes in (1, cfg.worker.cpus))
        e2e = end_to_end(cfg, videos, size, args.frames)
        produced, consumed = kafka_throughput(cfg, args.chunks, size)
    print(f"model {version}, {args.streams} streams x {args.frames} frames")
    print(f"bare model loop        {bare:8.1f} frames/s")
    print(f"end to end (Kafka+Ray) {e2e:8.1f} frames/s   ratio {e2e / bare:.2f} (target 0.85)")
    print(
        f"Kafka frame chunks     produce {produced:.1f} MB/s, consume {consumed:.1f} MB/s "
        f"({args.chunks} chunks of 8 frames at {size[0]}x{size[1]})"
    )


if __name__ == "__main__":
    main()
