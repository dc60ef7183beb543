"""The demo's real stream end to end: ``vtest.avi`` (Debian's opencv-doc) through ingest,
the broker, a worker running the shipped real model, Parquet and the contact sheet."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from ausm_stream.deploy.demo import VTEST, run_demo
from ausm_stream.model.versions import DEFAULT_WEIGHTS
from ausm_stream.pipeline.config import StorageConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store

pytestmark = pytest.mark.slow
REAL_WEIGHTS = DEFAULT_WEIGHTS.parent / "real-lite0.safetensors"
FRAMES = 24


def test_vtest_yields_tracks_of_objects(tmp_path):
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: make test installs Debian's opencv-doc")
    status = run_demo(tmp_path, streams=0, frames=FRAMES, weights=str(REAL_WEIGHTS), port=0)
    stream = status.streams["vtest"]
    assert stream.frames_out == FRAMES and stream.ended
    tracks = read_dataset(open_store(StorageConfig(url=f"file://{tmp_path / 'store'}")))
    vtest = tracks.filter(pc.equal(tracks["stream_id"], "vtest"))
    assert set(vtest["label"].to_pylist()) == {"object"}  # the real model's, not shapes'
    shown = vtest.filter(pc.greater(vtest["area"], 0))
    ids = set(shown["track_id"].to_pylist())
    assert 1 <= len(ids) <= 20, f"{len(ids)} tracks on {FRAMES} frames"
    # Tracks hold on: some track is shown on most frames.
    longest = max(pc.sum(pc.equal(shown["track_id"], i)).as_py() for i in ids)
    assert longest >= FRAMES // 2
    assert (tmp_path / "overlays" / "vtest.png").stat().st_size > 10_000
