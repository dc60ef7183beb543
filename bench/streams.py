"""Many streams per worker: memory against registered streams, paging cost, throughput.

    .venv/bin/python bench/streams.py                  # everything (~5 minutes)
    .venv/bin/python bench/streams.py --registered 10 100

1. A real worker (in this process, the embedded broker, a local object store) with
   ``resident_streams`` R = 16 and a host budget of 16 states. N streams register (one frame
   each, so each has a state), then 16 of them are active for two rounds of 8 frames. Printed
   per N: the process's resident memory (peak, sampled) over the idle worker's (its peak:
   the model and a full batch's working memory, from its warm-up step), against the
   budget R states + host budget, and the target of that + 10% of the worker's own memory,
   while the 16 are active (and, apart, during the burst of N first frames at once);
   where the states are (resident, host, object store); frames/s of the active phase.
2. Page-out and page-in time per state (zstd level 1 and the state's checksum included), and
   the compression ratio, from the same runs.
3. Throughput of 64 streams active in turn with R = 16 against all 64 resident, measured in
   one run of the processor alone (rounds alternate, medians). Target: at least 0.8.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

from ausm_stream.model import load_model
from ausm_stream.operators.processor import StreamProcessor
from ausm_stream.operators.status import WorkerStatus, peak_rss_bytes, rss_bytes
from ausm_stream.operators.worker import SegmentationWorker
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.broker import EmbeddedBroker
from ausm_stream.pipeline.config import PipelineConfig

R = 16
ACTIVE = 16
TURNS = 64


def frames_of(sid: str, first: int, n: int) -> records.FrameChunk:
    idx = np.arange(first, first + n)
    rng = np.random.default_rng([first, *sid.encode()])
    return records.FrameChunk(
        sid,
        idx,
        idx * 10**8,
        10**18 + idx * 125_000_000,
        128,
        128,
        rng.integers(0, 255, (n, 128, 128, 3), dtype=np.uint8),
    )


def send(cfg: PipelineConfig, producer, chunks: list[records.FrameChunk]) -> None:
    for chunk in chunks:
        value, kind = records.encode(chunk)
        part = kafka.partition_for(chunk.stream_id, cfg.kafka.partitions)
        kafka.send(producer, cfg.kafka.frames_topic, chunk.stream_id, value, kind, partition=part)
    producer.flush()


def wait_for(worker: SegmentationWorker, done, peak: list[int], timeout_s: float) -> WorkerStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = worker.status()
        peak[0] = max(peak[0], rss_bytes())
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker did not settle: {status}")
        time.sleep(0.1)


def registered_run(broker: EmbeddedBroker, root: Path, n: int, state_bytes: int) -> dict:
    budget = R * state_bytes
    cfg = PipelineConfig.from_dict(
        {
            "kafka": {"bootstrap": broker.bootstrap, "frames_topic": f"bench-{n}"},
            "storage": {"url": f"file://{root}/store-{n}"},
            "worker": {"resident_streams": R, "host_state_bytes": budget, "max_batch": R},
        }
    )
    kafka.ensure_topics(cfg.kafka, broker.bootstrap)
    producer = kafka.make_producer(cfg.kafka, broker.bootstrap)
    worker = SegmentationWorker(cfg, broker.bootstrap, list(range(cfg.kafka.partitions)))
    worker.run(idle_timeout_s=1.0)  # consumer, store client and threads: the idle worker
    # The model, with the working memory of a full batch (its warm-up step's peak).
    idle = peak_rss_bytes()
    peak = [rss_bytes()]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    streams = [f"cam-{i:04d}" for i in range(n)]
    send(cfg, producer, [frames_of(s, 0, 1) for s in streams])

    def settled(st: WorkerStatus) -> bool:
        stepped = sum(s.frames_out for s in st.streams.values()) == n
        return stepped and st.host_state_bytes <= budget

    wait_for(worker, settled, peak, timeout_s=60 + n)
    registering, peak = peak[0], [rss_bytes()]  # the burst of N first frames, then steady
    active = streams[:ACTIVE]
    began = time.perf_counter()
    for first in (1, 9):
        send(cfg, producer, [frames_of(s, first, 8) for s in active])
    st = wait_for(
        worker,
        lambda st: sum(st.streams[s].frames_out for s in active) == 17 * len(active),
        peak,
        timeout_s=300,
    )
    fps = 16 * len(active) / (time.perf_counter() - began)
    worker.stop()
    thread.join(60)
    producer.close()
    worker.producer.close()
    paging = worker.processor.states.stats
    return {
        "n": n,
        "growth": peak[0] - idle,
        "registering": registering - idle,
        "idle": idle,
        "budget": R * state_bytes + budget,
        "resident": st.resident_streams,
        "host": st.host_streams,
        "stored": st.stored_streams,
        "fps": fps,
        "out_ms": 1e3 * paging.out_seconds / max(paging.page_outs, 1),
        "in_ms": 1e3 * paging.in_seconds / max(paging.page_ins, 1),
        "wait_ms": 1e3 * paging.waited_seconds / max(paging.page_ins, 1),
        "ratio": st.host_state_bytes / max(paging.raw_bytes, 1),
    }


def turns_fps(model, resident: int | None, rounds: int = 2) -> float:
    """Frames/s of 64 streams fed 8 frames each in turn, stepped 16 at a time."""
    p = StreamProcessor(model, lambda f: None, max_batch=R, resident_streams=resident)
    streams = [f"turn-{i:02d}" for i in range(TURNS)]
    for sid in streams:  # every stream has a state before the clock starts
        p.on_record(frames_of(sid, 0, 1))
    p.drain()
    began = time.perf_counter()
    for r in range(rounds):
        for sid in streams:
            p.on_record(frames_of(sid, 1 + 8 * r, 8))
        p.drain()
    return rounds * 8 * TURNS / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registered", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the broker stops before clients
    torch.set_num_threads(1)
    dtype = PipelineConfig().worker.state_dtype
    model, _ = load_model("default", state_dtype=dtype)
    state_bytes = len(model.init_state(0).to_bytes())
    print(f"state: {state_bytes / 2**20:.2f} MiB per stream ({dtype}, tiny preset)")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        runs = [registered_run(broker, Path(tmp), n, state_bytes) for n in args.registered]
    print(f"\nworker with R = {R}, host budget {R} states; {ACTIVE} streams active")
    print(
        f"{'registered':>10} {'RSS growth':>11} {'R + host':>9} {'+10%':>8}     "
        f"{'registering':>11}  resident/host/stored  fps"
    )
    for r in runs:
        target = r["budget"] + 0.1 * (r["idle"] + r["budget"])
        mark = "ok  " if r["growth"] <= target else "OVER"
        print(
            f"{r['n']:>10} {r['growth'] / 2**20:>8.0f} MB {r['budget'] / 2**20:>6.0f} MB "
            f"{target / 2**20:>5.0f} MB {mark} {r['registering'] / 2**20:>8.0f} MB  "
            f"{r['resident']}/{r['host']}/{r['stored']:<14} {r['fps']:6.1f}"
        )
    last = runs[-1]
    print(
        f"\npaging: out {last['out_ms']:.1f} ms, in {last['in_ms']:.1f} ms per state (the step "
        f"waited {last['wait_ms']:.1f} ms of it: prefetch); "
        f"compressed to {last['ratio']:.2f} of its bytes (zstd level 1)"
    )
    paged, resident = [], []
    for _ in range(args.rounds):
        paged.append(turns_fps(model, R))
        resident.append(turns_fps(model, None))
    ratios = [p / r for p, r in zip(paged, resident, strict=True)]
    print(
        f"{TURNS} streams in turn: R = {R} {median(paged):.1f} frames/s, all resident "
        f"{median(resident):.1f} frames/s, ratio {median(ratios):.2f} "
        f"({', '.join(f'{r:.2f}' for r in ratios)}; target 0.8)"
    )


if __name__ == "__main__":
    main()
