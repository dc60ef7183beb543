"""``ausm-stream run`` stopped (SIGTERM, as Kubernetes stops a pod) and started again on the
same configuration resumes from its checkpoints: every frame once, no gap, the same tracks
(ids included) as a run that was never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml

from ausm_stream.pipeline.config import StorageConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store
from tests.e2e import FRAMES, write_videos

pytestmark = pytest.mark.slow
SCRIPT = Path(sys.executable).with_name("ausm-stream")


def write_config(tmp_path: Path, broker, weights: Path, name: str) -> tuple[Path, Path]:
    topic = uuid.uuid4().hex[:8]
    store = tmp_path / name
    cfg = {
        "kafka": {
            "bootstrap": broker.bootstrap,
            "partitions": 4,
            "frames_topic": f"frames-{topic}",
            "tracks_topic": f"tracks-{topic}",
            "dead_letter_topic": f"dlq-{topic}",
        },
        "storage": {"url": f"file://{store}"},
        "ray": {"address": "local", "num_cpus": 2},
        "model": {"weights": str(weights)},
        "ingest": {"pace": True},  # files at their frame rate: a stop lands mid-file
        "worker": {"parquet_frames": 16},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, store


def start(config: Path, videos: dict[str, Path], log: Path) -> subprocess.Popen:
    sources = [arg for sid, path in videos.items() for arg in ("--source", f"{sid}={path}")]
    return subprocess.Popen(
        [str(SCRIPT), "run", "--config", str(config), "--idle-timeout", "4", *sources],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def finish(proc: subprocess.Popen, log: Path, timeout_s: float = 240) -> dict:
    assert proc.wait(timeout_s) == 0, log.read_text()[-3000:]
    lines = log.read_text().splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")  # the summary printed last
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return json.loads("\n".join(lines[start : end + 1]))


def tracks(store: Path):
    table = read_dataset(open_store(StorageConfig(url=f"file://{store}")))
    order = [("stream_id", "ascending"), ("frame_idx", "ascending"), ("track_id", "ascending")]
    # capture_ts and date follow the wall clock of each run's ingest; all else must match.
    return table.drop_columns(["capture_ts", "date"]).sort_by(order)


def test_run_stopped_and_started_again_resumes_from_its_checkpoints(broker, weights, tmp_path):
    videos = write_videos(tmp_path / "videos", 2)
    ref_config, ref_store = write_config(tmp_path, broker, weights, "reference")
    finish(start(ref_config, videos, tmp_path / "reference.log"), tmp_path / "reference.log")

    config, store = write_config(tmp_path, broker, weights, "restarted")
    log = tmp_path / "restarted.log"
    first = start(config, videos, log)
    latest = store / "checkpoints" / "cam-0" / "latest.json"
    deadline = time.monotonic() + 180
    while not (latest.exists() and json.loads(latest.read_text())["frame_idx"] >= 16):
        assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    first.send_signal(signal.SIGTERM)
    stopped = finish(first, log)
    done_before = {sid: s["frames_out"] for sid, s in stopped["streams"].items()}
    assert 0 < sum(done_before.values()) < len(videos) * FRAMES  # stopped mid-stream
    assert all(not s["ended"] for s in stopped["streams"].values())
    summary = finish(start(config, videos, log), log)

    assert summary["recovered_streams"] == len(videos)
    for sid, s in summary["streams"].items():
        assert s["resumed_at"] == done_before[sid] and s["gaps"] == 0  # exactly where it was
        assert s["frames_out"] == FRAMES and s["ended"]
    frames = read_dataset(open_store(StorageConfig(url=f"file://{store}")), "frames")
    for sid in videos:
        idx = frames.filter(pc.field("stream_id") == sid)["frame_idx"].to_pylist()
        assert sorted(idx) == list(range(FRAMES)), sid  # every frame once
    got, want = tracks(store), tracks(ref_store)
    assert got.num_rows == want.num_rows and got.equals(want)  # ids continue across the stop
