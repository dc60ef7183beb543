"""Pooled ingest: processes and memory for many file streams, each at its own pace.

    .venv/bin/python bench/ingest.py                      # 200 streams, then 8 as before
    .venv/bin/python bench/ingest.py --streams 50 --frames 16

Starts a local Ray (loopback) and the embedded broker, writes ``--streams`` short H.264 files
(shapes videos, 96 x 160, 8 frames a second), and ingests every one of them at its own pace
(``ingest.pace``: as cameras deliver frames) through :class:`IngestPlacement`, as the stream
manager does: ``ingest.streams_per_process`` streams per process (64 by default). Prints the
ingest processes started, their summed resident memory (sampled every 0.2 s, peak), the
frames each stream should have and how many reached the frames topic (lost: the
difference; each frame must arrive once), and the wall time against the files' length.
Then the same for ``--baseline`` streams with one process per stream (``streams_per_process:
1``, the layout before pooling), for the memory per stream of each layout in one run.

Targets (issue 29): 200 file streams with at most 4 ingest processes and at most 2 GB of
ingest memory, no frame lost.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import ray

from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.operators.ingest_pool import IngestPlacement
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.broker import EmbeddedBroker
from ausm_stream.pipeline.config import IngestConfig, KafkaConfig, PipelineConfig
from ausm_stream.pipeline.video_files import write_h264

FPS = 8
SIZE = (64, 64)


def write_files(root: Path, count: int, frames: int) -> dict[str, Path]:
    """``count`` files from a handful of distinct videos (their content does not matter)."""
    spec = ShapesSpec(size=(96, 160), frames=frames)
    originals = [
        write_h264(root / f"v{i}.mp4", generate_video("val", i, spec).frames, FPS)
        for i in range(min(count, 8))
    ]
    return {f"cam-{i:03d}": originals[i % len(originals)] for i in range(count)}


def frames_in_topic(broker: EmbeddedBroker, cfg: KafkaConfig) -> dict[str, list[int]]:
    consumer = kafka.make_consumer(cfg, broker.bootstrap)
    kafka.assign(consumer, cfg.frames_topic, range(cfg.partitions))
    seen: dict[str, list[int]] = {}
    idle = 0
    while idle < 3:
        polled = consumer.poll(timeout_ms=1000)
        idle = 0 if polled else idle + 1
        for msgs in polled.values():
            for m in msgs:
                kind = kafka.header(m.headers, records.KIND_HEADER)
                rec = records.decode(kind, m.value, m.key.decode())
                if isinstance(rec, records.FrameChunk):
                    seen.setdefault(rec.stream_id, []).extend(rec.frame_idx.tolist())
    consumer.close()
    return seen


def rss_of(pid: int) -> int:
    """Resident bytes of process ``pid`` (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (FileNotFoundError, ProcessLookupError):
        return 0


def run(broker: EmbeddedBroker, files: dict[str, Path], frames: int, per_process: int) -> dict:
    cfg = PipelineConfig(
        kafka=KafkaConfig(
            bootstrap=broker.bootstrap, frames_topic=f"ingest-{uuid.uuid4().hex[:8]}", partitions=8
        ),
        ingest=IngestConfig(pace=True, streams_per_process=per_process),
    )
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    placement = IngestPlacement(cfg, broker.bootstrap, SIZE)
    start = time.monotonic()
    ingests = [placement.start(sid, str(path)) for sid, path in files.items()]
    processes = {ing.process._actor_id: ing.process for ing in ingests}  # one call each
    pids = ray.get([p.pid.remote() for p in processes.values()])
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], sum(rss_of(pid) for pid in pids))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    reports = ray.get([ing.run for ing in ingests])
    wall = time.monotonic() - start
    done.set()
    sampler.join()
    for sid in files:
        placement.release(sid)
    seen = frames_in_topic(broker, cfg.kafka)
    expected = len(files) * frames
    arrived = sum(len(set(v)) for v in seen.values())
    repeated = sum(len(v) - len(set(v)) for v in seen.values())
    return {
        "streams": len(files),
        "processes": len(pids),
        "rss": peak[0],
        "expected": expected,
        "reported": sum(r.frames for r in reports),
        "arrived": arrived,
        "repeated": repeated,
        "wall": wall,
    }


def show(label: str, r: dict, frames: int) -> None:
    print(
        f"{label}: {r['streams']} streams in {r['processes']} ingest processes, "
        f"peak RSS {r['rss'] / 2**20:.0f} MB ({r['rss'] / 2**20 / r['streams']:.1f} MB a stream); "
        f"frames {r['arrived']}/{r['expected']} in the topic (lost {r['expected'] - r['arrived']}, "
        f"repeated {r['repeated']}); {r['wall']:.1f} s for files of {frames / FPS:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--baseline", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
            files = write_files(Path(tmp), args.streams, args.frames)
            pooled = run(broker, files, args.frames, IngestConfig().streams_per_process)
            show("pooled (64 a process)", pooled, args.frames)
            few = dict(list(files.items())[: args.baseline])
            alone = run(broker, few, args.frames, 1)
            show("one process a stream", alone, args.frames)
            ok = (
                pooled["processes"] <= 4
                and pooled["rss"] <= 2 * 2**30
                and pooled["arrived"] == pooled["expected"]
            )
            print(
                f"memory a stream, pooled vs one process each: "
                f"{pooled['rss'] / pooled['streams'] / (alone['rss'] / alone['streams']):.3f}; "
                f"targets (<= 4 processes, <= 2 GB, nothing lost): {'met' if ok else 'MISSED'}"
            )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
