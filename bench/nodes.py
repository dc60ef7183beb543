"""Node loss on a multi-node Ray cluster: how soon a lost node's streams come back, and
whether anything is lost or written twice.

    .venv/bin/python bench/nodes.py                  # 3 losses (~5 minutes)
    .venv/bin/python bench/nodes.py --losses 1 --frames 160

A Ray cluster of three nodes on this machine (``ray.cluster_utils.Cluster`` on 127.0.0.2:
README, "Joining a Ray cluster"): the head with no CPU (driver, coordinator), two nodes of
one CPU, one worker on each (shipped shapes weights, the embedded broker, a local store).
Four streams' frames are in the topic before the workers start. Once a third of the frames
are segmented, a node is added (room for the lost worker) and worker-1's node is removed:
its raylet and worker go at once. Printed per loss: seconds from the removal to the first
tracks message of the lost worker's streams from their new worker (Ray's detection of the
lost node, the worker's start on the new node, model load, recovery from checkpoints: it
replays from its checkpoint, sending the same windows again), and to the first of a frame
the lost worker had not output, and frames lost and Parquet rows duplicated once the
run ends (each stream's frames must appear once).

Most of the time is Ray's: the GCS declares a node dead after 5 missed health checks, 3 s
apart by default (``--health-check-ms`` sets ``health_check_period_ms`` on the head, as a
cluster's ``ray start --system-config`` would); then the worker's restart, model load and
recovery take ~2.5 s.

Target (issue 29): at most 15 s from the node's removal to its streams' first new output;
0 lost, 0 duplicated.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import ray
from ray.cluster_utils import Cluster

from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.pipeline import kafka
from ausm_stream.pipeline.broker import EmbeddedBroker
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.ingest import Ingest
from ausm_stream.pipeline.storage import open_store
from ausm_stream.pipeline.video_files import write_h264

LOOPBACK = "127.0.0.2"
NODE = {"num_cpus": 1, "node_ip_address": LOOPBACK}
STREAMS = 4
SIZE = (128, 128)


def fill_topic(cfg: PipelineConfig, bootstrap: str, videos: dict[str, Path]) -> None:
    """Every video's frames and end in the frames topic, a thread per video."""
    kafka.ensure_topics(cfg.kafka, bootstrap)
    producer = kafka.make_producer(cfg.kafka, bootstrap)
    jobs = [Ingest(s, str(p), SIZE, producer, cfg.kafka, cfg.ingest) for s, p in videos.items()]
    threads = [threading.Thread(target=j.run) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    producer.close()


def segmented(pool: WorkerPool) -> int:
    try:
        return sum(s.frames_out for s in pool.status().streams.values())
    except ray.exceptions.RayError:
        return -1


def first_output(
    cfg: PipelineConfig, bootstrap: str, streams: set[str], since: float, lost_pid: int
) -> tuple[float, float]:
    """Seconds from ``since`` to the first tracks message of ``streams`` from their new
    worker (a replayed window, the same bytes again), and to the first of a frame the lost
    worker had not output. The topic is read once the lost worker's process is gone (it
    outlives its raylet for a moment and sends what it has): what it holds then is the lost
    worker's; what comes after, the new one's."""
    while os.path.exists(f"/proc/{lost_pid}") and not _zombie(lost_pid):
        time.sleep(0.05)
    consumer = kafka.make_consumer(cfg.kafka, bootstrap)
    tps = kafka.assign(consumer, cfg.kafka.tracks_topic, range(cfg.kafka.partitions))
    ends = consumer.end_offsets(tps)
    consumer.seek_to_beginning()
    done: dict[str, int] = {}  # each stream's last frame output before the loss
    first_any = first_new = None
    try:
        while time.monotonic() - since < 300 and first_new is None:
            for tp, msgs in consumer.poll(timeout_ms=100).items():
                for m in msgs:
                    sid = m.key.decode() if m.key else ""
                    if sid not in streams:
                        continue
                    head = dict(m.headers)
                    first, last = int(head["ausm-first-frame"]), int(head["ausm-last-frame"])
                    if m.offset < ends[tp]:
                        done[sid] = max(done.get(sid, -1), last)
                        continue
                    now = time.monotonic() - since
                    first_any = now if first_any is None else first_any
                    if first > done.get(sid, -1) and first_new is None:
                        first_new = now
    finally:
        consumer.close()
    if first_new is None:
        raise TimeoutError("the lost node's streams gave no new output within 300 s")
    return first_any, first_new


def one_loss(cluster: Cluster, broker: EmbeddedBroker, root: Path, run: int, frames: int) -> dict:
    spec = ShapesSpec(size=(96, 160), frames=frames)
    videos = {
        f"cam-{i}": write_h264(root / f"r{run}-{i}.mp4", generate_video("val", i, spec).frames, 8)
        for i in range(STREAMS)
    }
    cfg = PipelineConfig.from_dict(
        {
            "kafka": {
                "bootstrap": broker.bootstrap,
                "frames_topic": f"frames.nodes{run}",
                "tracks_topic": f"tracks.nodes{run}",
                "partitions": 4,
            },
            "storage": {"url": f"file://{root / f'store{run}'}"},
            "worker": {"parquet_frames": 16},
        }
    )
    fill_topic(cfg, broker.bootstrap, videos)
    pool = WorkerPool.start(cfg, broker.bootstrap, 2)
    try:
        lost_pid = ray.get(pool.workers()["worker-1"].pid.remote())
        lost_node = node_of(cluster, pool.workers()["worker-1"])
        run_ref = pool.run(until_ended=set(videos), max_seconds=600)
        while segmented(pool) < STREAMS * frames // 3:
            time.sleep(0.1)
        status = pool.status().streams
        theirs = {sid for sid, s in status.items() if s.worker == "worker-1"}
        cluster.add_node(**NODE)
        removed = time.monotonic()
        cluster.remove_node(lost_node, allow_graceful=False)
        back = first_output(cfg, broker.bootstrap, theirs, removed, lost_pid)
        ray.get(run_ref, timeout=600)
    finally:
        pool.kill()
    rows = read_dataset(open_store(cfg.storage), "frames")
    lost = dup = 0
    for sid in videos:
        seen = rows.filter(pc.field("stream_id") == sid)["frame_idx"].to_pylist()
        lost += frames - len(set(seen))
        dup += len(seen) - len(set(seen))
    return {"back": back[0], "new": back[1], "streams": sorted(theirs), "lost": lost, "dup": dup}


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def node_of(cluster: Cluster, handle: ray.actor.ActorHandle):
    """The cluster node whose raylet started the actor's process."""
    from ray._private import ray_constants

    pid = ray.get(handle.pid.remote())
    with open(f"/proc/{pid}/stat") as fh:
        parent = int(fh.read().rsplit(")", 1)[1].split()[1])
    for node in cluster.list_all_nodes():
        if node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid == parent:
            return node
    raise RuntimeError(f"no node started process {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--losses", type=int, default=3)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument(
        "--health-check-ms",
        type=int,
        default=None,
        help="Ray's health_check_period_ms (default 3000: a lost node is declared dead after "
        "5 missed checks, ~15 s)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    head = {"num_cpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False}
    if args.health_check_ms:
        head["_system_config"] = {"health_check_period_ms": args.health_check_ms}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(2):
            cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
            for run in range(args.losses):
                r = one_loss(cluster, broker, Path(tmp), run, args.frames)
                print(
                    f"loss {run + 1}: streams {', '.join(r['streams'])}: tracks again after "
                    f"{r['back']:.1f} s, of frames not output before after {r['new']:.1f} s; "
                    f"frames lost {r['lost']}, Parquet rows duplicated "
                    f"{r['dup']} (target: at most 15 s, 0, 0)"
                )
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
