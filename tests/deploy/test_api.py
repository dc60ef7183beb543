"""The control plane: the real Serve app on 127.0.0.1 over the embedded pipeline (Tansu
broker, local store, local Ray), driven over HTTP, from the CLI client and in Chromium.

One pipeline for the module: it takes ~20 s to start (test_api_restart.py restarts one)."""

from __future__ import annotations

import io
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pycocotools import mask as mask_utils

from ausm_stream.deploy.cli import main
from ausm_stream.deploy.overlay import PALETTE
from ausm_stream.deploy.serve import control_plane
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.storage import open_store
from ausm_stream.pipeline.video_files import write_h264
from tests.conftest import wait_for
from tests.e2e import camera_chunk

pytestmark = pytest.mark.slow
TOKEN = "test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRAMES = 96
SIZE = (128, 128)


def make_video(root: Path, name: str, index: int) -> tuple[Path, object]:
    video = generate_video("test", index, ShapesSpec(size=SIZE, frames=FRAMES, max_speed=2.0))
    return write_h264(root / f"{name}.mp4", video.frames, fps=8), video


@pytest.fixture(scope="module")
def setup(tmp_path_factory, broker):
    root = tmp_path_factory.mktemp("api")
    topic = uuid.uuid4().hex[:8]
    cfg = PipelineConfig.from_dict(
        {
            "kafka": {
                "bootstrap": broker.bootstrap,
                "frames_topic": f"frames-{topic}",
                "tracks_topic": f"tracks-{topic}",
                "dead_letter_topic": f"dlq-{topic}",
            },
            "storage": {"url": f"file://{root / 'store'}"},
            "ray": {"num_cpus": 2},
            "ingest": {"pace": True},  # files at 8 fps, as cameras: streams stay live a while
            "worker": {"count": 1, "parquet_frames": 16, "checkpoint_seconds": 2.0},
            "api": {"port": 0, "token": TOKEN},
        }
    )
    return root, cfg


@pytest.fixture(scope="module")
def api(setup):
    _, cfg = setup
    with control_plane(cfg) as cp:
        yield cp


def url(api, path: str) -> str:
    return api.url + path


def get(api, path: str, **kw) -> requests.Response:
    return requests.get(url(api, path), headers=AUTH, timeout=60, **kw)


def post(api, path: str, body) -> requests.Response:
    return requests.post(url(api, path), json=body, headers=AUTH, timeout=120)


def segmented(api, sid: str) -> int:
    seg = get(api, f"/streams/{sid}").json()["segmentation"]
    return seg["frames_out"] if seg else 0


def test_auth_and_health(api):
    assert requests.get(url(api, "/streams"), timeout=30).status_code == 401
    wrong = requests.get(url(api, "/streams"), headers={"Authorization": "Bearer x"}, timeout=30)
    assert wrong.status_code == 401 and "bearer token" in wrong.json()["detail"]
    assert requests.get(url(api, "/metrics"), timeout=30).status_code == 401
    assert requests.get(url(api, "/"), timeout=30).status_code == 401
    health = requests.get(url(api, "/healthz"), timeout=30)  # no token needed
    assert health.status_code == 200, health.text
    assert health.json() == {
        "ok": True,
        "broker": "ok",
        "store": "ok",
        "workers": "ok (1 answering)",
    }
    schema = get(api, "/openapi.json").json()
    assert {"/streams", "/streams/{stream_id}", "/streams/{stream_id}/prompts"} <= set(
        schema["paths"]
    )


def test_stream_lifecycle(api, setup):
    root, cfg = setup
    path, video = make_video(root, "life", 3)
    created = post(api, "/streams", {"id": "life", "source": str(path)})
    assert created.status_code == 201, created.text
    assert post(api, "/streams", {"id": "life", "source": str(path)}).status_code == 409

    wait_for("frames counted", lambda: segmented(api, "life") >= 8)
    view = get(api, "/streams/life").json()
    assert view["ingest"]["state"] == "connected" and view["ingest"]["source_height"] == 128
    assert view["segmentation"]["worker"] == "worker-0"

    # Prompt object 0 of the video with its true mask, a few frames ahead (RLE, source px).
    at = view["ingest"]["frames"] + 8
    k = int(np.argmax(video.masks[at].sum(axis=(1, 2))))
    rle = mask_utils.encode(np.asfortranarray(video.masks[at, k].astype(np.uint8)))
    body = {
        "objects": [{"object_id": 42, "mask": {"size": SIZE, "counts": rle["counts"].decode()}}],
        "frame": at,
    }
    accepted = post(api, "/streams/life/prompts", body)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"stream_id": "life", "frame": at, "object_ids": [42]}
    # Without a frame it applies at the next frame ingested after it, which the answer names.
    nxt = post(api, "/streams/life/prompts", {"objects": [{"box": [10, 10, 40, 40]}]})
    assert nxt.status_code == 202, nxt.text
    assert nxt.json()["object_ids"] == [43] and nxt.json()["frame"] >= view["ingest"]["produced"]

    wait_for("the prompt's frame", lambda: segmented(api, "life") > at + 2)
    removed = requests.delete(url(api, "/streams/life"), headers=AUTH, timeout=120)
    assert removed.status_code == 200, removed.text
    frames = removed.json()["frames"]
    assert at < frames <= FRAMES
    assert get(api, "/streams/life").status_code == 404

    store = open_store(cfg.storage)

    def last_rows_written():
        table = read_dataset(store, "frames")
        mine = table.filter(pc.field("stream_id") == "life")
        return mine.num_rows == frames and mine

    table = wait_for("the last rows", last_rows_written)
    assert sorted(table.column("frame_idx").to_pylist()) == list(range(frames))
    tracks = read_dataset(store).filter(pc.field("stream_id") == "life")
    prompted = tracks.filter(pc.field("prompt_object_id") == 42)
    assert prompted.num_rows > 0
    assert min(prompted.column("frame_idx").to_pylist()) == at
    old_ids = set(tracks.column("track_id").to_pylist())

    # Added again under the same id: a new life, numbered on from where the old one ended.
    again = post(api, "/streams", {"id": "life", "source": str(path)})
    assert again.status_code == 201, again.text
    assert again.json()["first_frame"] == frames

    def new_life() -> dict | None:  # status is pushed once a second: the old life's at first
        seg = get(api, "/streams/life").json()["segmentation"]
        return seg if seg and not seg["ended"] and seg["frames_out"] >= 16 else None

    seg = wait_for("the new life's frames", new_life)
    assert seg["frames_out"] < frames + 16  # counted from the new life
    requests.delete(url(api, "/streams/life"), headers=AUTH, timeout=120).raise_for_status()
    new = wait_for(
        "the new life's rows",
        lambda: (
            (
                t := read_dataset(store, "frames").filter(
                    (pc.field("stream_id") == "life") & (pc.field("frame_idx") >= frames)
                )
            ).num_rows
            and t
        ),
    )
    assert min(new.column("frame_idx").to_pylist()) == frames
    new_tracks = read_dataset(store).filter(
        (pc.field("stream_id") == "life") & (pc.field("frame_idx") >= frames)
    )
    assert not old_ids & set(new_tracks.column("track_id").to_pylist())  # ids never reused


def test_bad_requests(api, setup):
    root, _ = setup
    path, _ = make_video(root, "bad", 4)
    missing = post(api, "/streams", {"id": "x"})
    assert missing.status_code == 422 and "source" in str(missing.json()["detail"])
    extra = post(api, "/streams", {"id": "x", "source": str(path), "fsp": 8})
    assert extra.status_code == 422 and "fsp" in str(extra.json()["detail"])
    bad_id = post(api, "/streams", {"id": "a b/c", "source": str(path)})
    assert bad_id.status_code == 422 and "id" in str(bad_id.json()["detail"])
    no_file = post(api, "/streams", {"id": "x", "source": str(root / "none.mp4")})
    assert no_file.status_code == 422 and "none.mp4" in no_file.json()["detail"]
    for method, path_ in [
        ("GET", "/streams/ghost"),
        ("DELETE", "/streams/ghost"),
        ("GET", "/streams/ghost/preview.png"),
    ]:
        r = requests.request(method, url(api, path_), headers=AUTH, timeout=60)
        assert r.status_code == 404 and "ghost" in r.json()["detail"], (method, path_)
    ghost = post(api, "/streams/ghost/prompts", {"objects": [{"box": [0, 0, 5, 5]}]})
    assert ghost.status_code == 404

    assert post(api, "/streams", {"id": "bad", "source": str(path)}).status_code == 201
    wait_for("frames", lambda: segmented(api, "bad") >= 1)
    both = post(
        api, "/streams/bad/prompts", {"objects": [{"box": [0, 0, 5, 5], "points": [[1, 1]]}]}
    )
    assert both.status_code == 422 and "exactly one" in str(both.json()["detail"])
    rle = mask_utils.encode(np.asfortranarray(np.ones((64, 64), np.uint8)))
    small = {"size": [64, 64], "counts": rle["counts"].decode()}
    wrong_size = post(api, "/streams/bad/prompts", {"objects": [{"mask": small}]})
    assert wrong_size.status_code == 422
    assert "64x64" in wrong_size.json()["detail"] and "128x128" in wrong_size.json()["detail"]
    outside = post(api, "/streams/bad/prompts", {"objects": [{"box": [0, 0, 500, 5]}]})
    assert outside.status_code == 422 and "box" in outside.json()["detail"]
    past = post(api, "/streams/bad/prompts", {"objects": [{"box": [0, 0, 5, 5]}], "frame": 0})
    assert past.status_code == 409 and "already ingested" in past.json()["detail"]
    requests.delete(url(api, "/streams/bad"), headers=AUTH, timeout=120).raise_for_status()


def test_metrics_move(api, setup):
    root, _ = setup
    path, _ = make_video(root, "metered", 5)
    assert post(api, "/streams", {"id": "metered", "source": str(path)}).status_code == 201

    def scrape() -> dict[str, dict]:
        text = get(api, "/metrics").text
        out: dict[str, dict] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                out.setdefault(sample.name, {})[key] = sample.value
        return out

    wait_for("frames", lambda: segmented(api, "metered") >= 4)
    first = scrape()
    stream = (("stream", "metered"),)
    wait_for(
        "more frames",
        lambda: segmented(api, "metered") >= first["ausm_frames_out_total"][stream] + 8,
    )
    second = scrape()
    assert second["ausm_frames_out_total"][stream] > first["ausm_frames_out_total"][stream]
    assert second["ausm_ingest_frames_total"][stream] >= second["ausm_frames_out_total"][stream]
    worker = (("worker", "worker-0"),)
    assert second["ausm_step_seconds_count"][worker] > first["ausm_step_seconds_count"][worker]
    inf = (("le", "+Inf"), ("worker", "worker-0"))
    assert second["ausm_batch_size_bucket"][inf] == second["ausm_batch_size_count"][worker]
    for name in ("ausm_lag_frames", "ausm_active_tracks", "ausm_ingest_reconnects_total"):
        assert stream in second[name], name
    assert worker in second["ausm_checkpoints_written_total"]
    assert worker in second["ausm_dead_letters_total"]
    requests.delete(url(api, "/streams/metered"), headers=AUTH, timeout=120).raise_for_status()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "the live page test needs Debian's chromium package (apt-get install chromium)"
    return found


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=6000",
    ]
    return subprocess.run(
        [chromium(), *flags, *args], capture_output=True, text=True, timeout=120, check=True
    )


def test_live_page_in_chromium(api, setup, tmp_path):
    root, _ = setup
    ids = ["page-a", "page-b"]
    for i, sid in enumerate(ids):
        path, _ = make_video(root, sid, 10 + i)
        assert post(api, "/streams", {"id": sid, "source": str(path)}).status_code == 201
    for sid in ids:
        wait_for("previews", lambda sid=sid: get(api, f"/streams/{sid}/preview.png").ok)
    preview = get(api, f"/streams/{ids[0]}/preview.png")
    assert preview.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(preview.content)).size == (128, 128)

    page = api.page_url()
    dom = run_chromium(tmp_path, "--dump-dom", page).stdout
    for sid in ids:
        assert f'id="stream-{sid}"' in dom
    assert dom.count('data-loaded="true"') >= len(ids), dom[-2000:]
    shot = tmp_path / "page.png"
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1500,500", page)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(np.float32)
    # The previews' masks are painted in the track palette over the frames.
    near = np.abs(pixels[:, None, :] - (0.55 * PALETTE)[None]).max(axis=2) < 90
    assert near.any(axis=1).sum() > 200
    for sid in ids:
        requests.delete(url(api, f"/streams/{sid}"), headers=AUTH, timeout=120).raise_for_status()


def test_cli_client(api, setup, capsys):
    root, _ = setup
    path, _ = make_video(root, "cli", 6)
    common = ["streams", "--url", api.url, "--token", TOKEN]
    assert main([*common, "add", "cli", str(path)]) == 0
    assert "added cli" in capsys.readouterr().out
    wait_for("frames", lambda: segmented(api, "cli") >= 4)
    assert main([*common, "list"]) == 0
    listed = capsys.readouterr().out
    assert any(line.split()[:2] == ["cli", "connected"] for line in listed.splitlines()), listed
    assert main([*common, "show", "cli"]) == 0
    assert '"id": "cli"' in capsys.readouterr().out
    assert main([*common, "prompt", "cli", "--point", "60,60", "--point", "62,61"]) == 0
    assert "applies at frame" in capsys.readouterr().out
    assert main([*common, "rm", "cli"]) == 0
    assert "removed cli after" in capsys.readouterr().out
    assert main([*common, "show", "cli"]) == 2
    assert "404 no stream 'cli'" in capsys.readouterr().err
    assert main(["streams", "--url", api.url, "--token", "wrong", "list"]) == 2
    assert "401" in capsys.readouterr().err


def test_external_stream_ingested_elsewhere(api, setup):
    """An ``external`` stream: frames come from a producer that is not ours (as
    ``ausm-stream ingest`` by a camera); prompts are placed by reading the topic back."""
    _, cfg = setup
    created = post(api, "/streams", {"id": "ext", "source": "external"})
    assert created.status_code == 201 and created.json()["ingest"] is None
    early = post(api, "/streams/ext/prompts", {"objects": [{"box": [0, 0, 20, 20]}]})
    assert early.status_code == 409 and "no frames yet" in early.json()["detail"]

    producer = kafka.make_producer(cfg.kafka, api.bootstrap)
    partition = kafka.partition_for("ext", cfg.kafka.partitions)

    def send(first: int) -> None:
        value, kind = records.encode(camera_chunk("ext", first, 8))
        kafka.send(producer, cfg.kafka.frames_topic, "ext", value, kind, partition=partition)
        producer.flush()

    send(0)
    send(8)
    wait_for("frames", lambda: segmented(api, "ext") >= 16)
    placed = post(api, "/streams/ext/prompts", {"objects": [{"box": [30, 30, 90, 90]}]})
    assert placed.status_code == 202, placed.text
    assert placed.json()["frame"] == 16  # after the newest frame in the topic before it
    past = post(api, "/streams/ext/prompts", {"objects": [{"box": [0, 0, 9, 9]}], "frame": 3})
    assert past.status_code == 409
    send(16)
    wait_for("frames", lambda: segmented(api, "ext") >= 24)
    removed = requests.delete(url(api, "/streams/ext"), headers=AUTH, timeout=120)
    assert removed.json() == {"id": "ext", "frames": 24}
    store = open_store(cfg.storage)
    rows = wait_for(
        "the end",
        lambda: (
            (t := read_dataset(store, "frames").filter(pc.field("stream_id") == "ext")).num_rows
            == 24
            and t
        ),
    )
    assert sorted(rows.column("frame_idx").to_pylist()) == list(range(24))
    tracks = read_dataset(store).filter(pc.field("stream_id") == "ext")
    prompted = tracks.filter(pc.field("prompted")).column("frame_idx").to_pylist()
    assert prompted and min(prompted) == 16
