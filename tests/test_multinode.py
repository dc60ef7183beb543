"""A Ray cluster of several nodes on this machine (``ray.cluster_utils.Cluster``): one raylet
per node, the head holding no CPU (the driver and the coordinator), two nodes of one CPU
each, so the two workers (one CPU each) land on different nodes.

A whole node removed mid-run takes its raylet and its worker down at once; a node added
beside gives Ray room to start the worker again, which resumes its streams from their
checkpoints. Nothing is lost or written twice: the output equals the run without the loss,
file for file and row for row.
"""

from __future__ import annotations

import pytest
import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from ausm_stream.operators.pool import WorkerPool
from ausm_stream.pipeline.config import StorageConfig
from tests.e2e import ingest_all, pipeline_config, run_workers, write_videos
from tests.test_failover import (
    STREAMS,
    TOTAL,
    Outputs,
    assert_same_outputs,
    outputs,
    wait_for_frames,
)

pytestmark = pytest.mark.slow
LOOPBACK = "127.0.0.2"
"""The nodes' address: loopback, but not 127.0.0.1, which ``ray.init(address=...)`` rewrites
to the machine's outward address, where nodes bound to loopback do not answer (README,
"Joining a Ray cluster")."""
NODE = {"num_cpus": 1, "node_ip_address": LOOPBACK}


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False},
    )
    for _ in range(2):
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    ray.init(
        address=cluster.address,
        _node_ip_address=LOOPBACK,
        log_to_driver=False,
        configure_logging=False,
    )
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return write_videos(tmp_path_factory.mktemp("videos"), STREAMS)


def node_of(cluster: Cluster, handle: ray.actor.ActorHandle):
    """The cluster node whose raylet started the actor's process."""
    pid = ray.get(handle.pid.remote())
    with open(f"/proc/{pid}/stat") as fh:
        parent = int(fh.read().rsplit(")", 1)[1].split()[1])
    for node in cluster.list_all_nodes():
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        if raylet == parent:
            return node
    raise AssertionError(f"no node started process {pid}")


def test_a_node_removed_mid_run_moves_its_worker_and_loses_nothing(
    cluster, broker, weights, videos, tmp_path
):
    reference_cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/ref"))
    ingest_all(reference_cfg, broker, videos)
    run_workers(reference_cfg, broker, set(videos), workers=2)
    reference: Outputs = outputs(broker, reference_cfg)

    cfg = pipeline_config(broker, weights, StorageConfig(url=f"file://{tmp_path}/store"))
    ingest_all(cfg, broker, videos)
    pool = WorkerPool.start(cfg, broker.bootstrap, 2)
    try:
        workers = pool.workers()
        nodes = {name: node_of(cluster, w) for name, w in workers.items()}
        assert len({n.unique_id for n in nodes.values()}) == 2  # one worker per node
        head = cluster.head_node.unique_id
        assert head not in {n.unique_id for n in nodes.values()}
        run = pool.run(until_ended=set(videos), max_seconds=300)
        wait_for_frames(pool, TOTAL // 3)
        cluster.add_node(**NODE)  # room for the lost worker to start again
        lost = nodes["worker-1"]
        cluster.remove_node(lost, allow_graceful=False)  # raylet and worker at once
        summary = ray.get(run, timeout=360)
        moved = node_of(cluster, pool.workers()["worker-1"])
        assert moved.unique_id not in {lost.unique_id, head}
    finally:
        pool.kill()
    assert summary.recovered_streams >= 1  # the lost worker's streams, from their checkpoints
    assert_same_outputs(broker, cfg, reference)
