"""A control plane stopped and started again on the same broker and store brings back every
registered stream: their ingest resumes after the last frame produced, nothing twice."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
import requests

from ausm_stream.deploy.serve import control_plane
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store
from tests.deploy.test_api import AUTH, FRAMES, get, make_video, post, segmented, setup, wait_for

pytestmark = pytest.mark.slow
__all__ = ["setup"]  # the module fixture, shared with test_api.py


def test_restart_brings_back_registered_streams(setup):
    root, cfg = setup
    path, _ = make_video(root, "kept", 7)
    with control_plane(cfg) as api:
        assert post(api, "/streams", {"id": "kept", "source": str(path)}).status_code == 201
        assert post(api, "/streams", {"id": "cam-ext", "source": "external"}).status_code == 201
        wait_for("frames", lambda: segmented(api, "kept") >= 8)
    # Stopped mid-file (ingest is paced at 8 fps): it resumes where it stopped.
    with control_plane(cfg) as api:
        assert sorted(api.restored) == ["cam-ext", "kept"]
        listed = {s["id"]: s for s in get(api, "/streams").json()}
        assert set(listed) == {"cam-ext", "kept"} and listed["cam-ext"]["ingest"] is None
        wait_for(
            "the file's end",
            lambda: (get(api, "/streams/kept").json()["ingest"] or {}).get("state") == "ended",
            timeout_s=120,
        )
        wait_for("every frame", lambda: segmented(api, "kept") >= FRAMES - 8 or None)
        requests.delete(api.url + "/streams/kept", headers=AUTH, timeout=120).raise_for_status()
    frames = read_dataset(open_store(cfg.storage), "frames")
    idx = frames.filter(pc.field("stream_id") == "kept").column("frame_idx").to_pylist()
    assert sorted(idx) == list(range(FRAMES))  # every frame once across the restart
