import json

import pytest

from ausm_stream.errors import ConfigError
from ausm_stream.operators.coordinator import (
    owned_streams,
    restart_delay,
    split_partitions,
    worker_count,
)
from ausm_stream.operators.status import PoolStatus, StreamStatus, WorkerStatus
from ausm_stream.pipeline.config import PipelineConfig


def config(partitions: int = 4, **worker: object) -> PipelineConfig:
    return PipelineConfig.from_dict({"kafka": {"partitions": partitions}, "worker": worker})


@pytest.mark.parametrize(
    ("partitions", "workers", "expected"),
    [
        (8, 3, [[0, 1, 2], [3, 4, 5], [6, 7]]),
        (4, 2, [[0, 1], [2, 3]]),
        (4, 1, [[0, 1, 2, 3]]),
        (3, 3, [[0], [1], [2]]),
    ],
)
def test_partitions_split_into_contiguous_even_ranges(partitions, workers, expected):
    assert split_partitions(partitions, workers) == expected


@pytest.mark.parametrize("workers", [0, 5])
def test_a_split_that_leaves_a_worker_idle_is_refused(workers):
    with pytest.raises(ValueError, match="cannot split 4 partitions"):
        split_partitions(4, workers)


def test_worker_count_defaults_to_one_per_worker_cpus_cores_of_the_cluster():
    assert worker_count(config(), {"CPU": 2}) == 2
    assert worker_count(config(cpus=2), {"CPU": 2}) == 1
    assert worker_count(config(cpus=4), {"CPU": 2}) == 1  # never none
    assert worker_count(config(partitions=3), {"CPU": 16}) == 3  # never an idle one
    assert worker_count(config(count=3), {"CPU": 4}) == 3


def test_gpu_workers_count_the_gpus_and_may_wait_for_autoscaled_ones():
    gpu = {"gpus": 1.0, "device": "cuda"}
    assert worker_count(config(**gpu), {"CPU": 32, "GPU": 3}) == 3
    assert worker_count(config(**gpu), {"CPU": 32, "GPU": 0}) == 1  # never none
    assert worker_count(config(count=4, **gpu), {"CPU": 2, "GPU": 1}) == 4  # nodes come up


def test_worker_counts_that_cannot_work_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"worker\.count=5 is more than kafka\.partitions=4"):
        worker_count(config(count=5), {"CPU": 16})
    with pytest.raises(ConfigError, match=r"worker\.count=2 x worker\.cpus=2 needs 4 CPUs"):
        worker_count(config(count=2, cpus=2), {"CPU": 2})


def test_a_failed_run_starts_again_after_a_back_off_that_doubles_up_to_a_minute():
    assert [restart_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_every_stream_belongs_to_exactly_one_worker():
    cfg = config(partitions=8)
    streams = {f"cam-{i}" for i in range(40)}
    owned = [owned_streams(streams, r, cfg) for r in split_partitions(8, 3)]
    assert set().union(*owned) == streams
    assert sum(len(o) for o in owned) == len(streams)
    assert all(owned)  # 40 streams spread over every worker


def test_the_pool_status_merges_its_workers():
    def stream(sid: str, worker: str) -> StreamStatus:
        return StreamStatus(sid, worker, 5, 5, 0, 0, 0.0, 8.0, "resident", 1, 2, 0, False, 4, None)

    def worker(name, partitions, streams, dead):
        counters = dict.fromkeys(
            ["resident_streams", "host_streams", "stored_streams", "host_state_bytes"], 0
        )
        paging = dict.fromkeys(["page_outs", "page_ins", "store_page_ins"], 0)
        return WorkerStatus(
            name=name,
            model_version="m@1",
            partitions=partitions,
            partition_lag=dict.fromkeys(partitions, 0),
            dead_letters=dead,
            checkpoints_written=4,
            recovered_streams=1,
            **counters,
            **paging,
            store_errors=0,
            store_outage_s=0.0,
            broker_errors=0,
            broker_outage_s=0.0,
            run_seconds=2.0,
            step_seconds=1.5,
            cpu_seconds=1.8,
            rss_bytes=10,
            peak_rss_bytes=20,
            streams={sid: stream(sid, name) for sid in streams},
        )

    merged = PoolStatus.merge([worker("w1", [2, 3], ["c"], 2), worker("w0", [0, 1], ["b", "a"], 1)])
    assert merged.dead_letters == 3
    assert (merged.checkpoints_written, merged.recovered_streams) == (8, 2)
    assert list(merged.streams) == ["a", "b", "c"]
    assert [s.worker for s in merged.streams.values()] == ["w0", "w0", "w1"]
    assert [(w.name, w.partitions, w.streams) for w in merged.workers] == [
        ("w0", [0, 1], {}),
        ("w1", [2, 3], {}),
    ]
    as_json = json.loads(json.dumps(merged.to_dict()))  # what ``run`` prints and an API serves
    assert as_json["streams"]["c"]["frames_out"] == 5
    assert as_json["workers"][0]["run_seconds"] == 2.0
