"""The control plane: the real Serve app on 127.0.0.1 over the embedded pipeline (Tansu
broker, local store, local Ray), driven over HTTP, from the CLI client and in Chromium.

One pipeline for the module: it takes ~20 s to start (test_api_restart.py restarts one)."""

from __future__ import annotations

import dataclasses
import io
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import ray
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
from ausm_stream.pipeline.ingest import SOURCE_FAILED
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
            # files at 8 fps, as cameras: streams stay live a while; the API may read files
            # under root and name loopback (ffmpeg serves the live streams there)
            "ingest": {"pace": True, "media_root": str(root), "source_hosts": "127.0.0.1"},
            # a loop without a heartbeat for 5 s is stuck (the default, 30 s, is for real models)
            "worker": {
                "count": 1,
                "parquet_frames": 16,
                "checkpoint_seconds": 2.0,
                "heartbeat_timeout_s": 5.0,
            },
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


def health(api, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(url(api, "/healthz"), headers=headers, timeout=30)


def healthy(api) -> bool:
    return health(api, TOKEN).status_code == 200


def unhealthy(api) -> dict | None:
    """The detailed health while it is 503."""
    answer = health(api, TOKEN)
    return answer.json() if answer.status_code == 503 else None


def test_auth_and_health(api):
    assert requests.get(url(api, "/streams"), timeout=30).status_code == 401
    wrong = requests.get(url(api, "/streams"), headers={"Authorization": "Bearer x"}, timeout=30)
    assert wrong.status_code == 401 and "bearer token" in wrong.json()["detail"]
    assert requests.get(url(api, "/metrics"), timeout=30).status_code == 401
    assert requests.get(url(api, "/"), timeout=30).status_code == 401
    wait_for("the worker's first heartbeat", lambda: healthy(api))
    anonymous = health(api)  # no token needed, and it says no more than ok or error
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    assert health(api, "wrong").json() == {"status": "ok"}
    assert health(api, TOKEN).json() == {
        "status": "ok",
        "broker": "ok",
        "store": "ok",
        "workers": "ok (1 running)",
    }
    # The schema needs the token; no docs pages (their scripts could not send it).
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        assert requests.get(url(api, path), timeout=30).status_code == 401, path
    assert get(api, "/docs").status_code == 404 and get(api, "/redoc").status_code == 404
    schema = get(api, "/openapi.json").json()
    assert {"/streams", "/streams/{stream_id}", "/streams/{stream_id}/prompts"} <= set(
        schema["paths"]
    )


def raw_post(api, path: str, head: dict[str, str], body: bytes, timeout_s: float = 20) -> str:
    """Send a request's head and ``body`` (which may be less than its Content-Length says)
    and return the status line of the answer, without sending anything more."""
    host, port = api.url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in head.items()]
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n")[0].decode()


def test_the_token_is_checked_before_the_body_is_read(api):
    # 40 MB announced, 1 MiB sent, and the client waits: the answer comes without the rest.
    json_head = {"Content-Type": "application/json", "Content-Length": str(40_000_000)}
    started = time.monotonic()
    status = raw_post(api, "/streams", json_head, b"[" * (1 << 20))
    assert status.split()[1] == "401", status
    assert time.monotonic() - started < 10
    with_token = {**json_head, "Authorization": f"Bearer {TOKEN}"}
    status = raw_post(api, "/streams", with_token, b"[" * (1 << 20))  # over api.max_body_bytes
    assert status.split()[1] == "413", status
    # A whole 40 MB body without a token: refused as quickly.
    started = time.monotonic()
    big = requests.post(url(api, "/streams"), data=b"[" * 40_000_000, timeout=60)
    assert big.status_code == 401 and time.monotonic() - started < 10
    # Bad JSON: 401 with a wrong token, 422 with the right one.
    bad = b'{"id": "x", "source": '
    for token, status in (("wrong", 401), (TOKEN, 422)):
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        answer = requests.post(url(api, "/streams"), data=bad, headers=headers, timeout=30)
        assert answer.status_code == status, (token, answer.text)


def test_bodies_over_the_limit_answer_413(api):
    limit = PipelineConfig().api.max_body_bytes
    over = {"id": "big", "source": "external", "pad": "x" * limit}
    declared = requests.post(url(api, "/streams"), json=over, headers=AUTH, timeout=60)
    assert declared.status_code == 413 and str(limit) in declared.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b" " * (limit // 2)
        yield b"{}"

    streamed = requests.post(
        url(api, "/streams"),
        data=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=60,
    )
    assert streamed.status_code == 413 and str(limit) in streamed.json()["detail"]
    assert get(api, "/streams/big").status_code == 404


def test_prompts_are_bounded_and_a_refused_one_saves_nothing(api, setup):
    _, cfg = setup
    assert post(api, "/streams", {"id": "ids", "source": "external"}).status_code == 201
    producer = kafka.make_producer(cfg.kafka, api.bootstrap)
    value, kind = records.encode(camera_chunk("ids", 0, 8))
    partition = kafka.partition_for("ids", cfg.kafka.partitions)
    kafka.send(producer, cfg.kafka.frames_topic, "ids", value, kind, partition=partition)
    producer.flush()
    box = [10, 10, 40, 40]
    huge = post(api, "/streams/ids/prompts", {"objects": [{"box": box, "object_id": 2**63}]})
    assert huge.status_code == 422 and "object_id" in str(huge.json()["detail"])
    far = post(api, "/streams/ids/prompts", {"objects": [{"box": box}], "frame": 2**63})
    assert far.status_code == 422
    many = post(api, "/streams/ids/prompts", {"objects": [{"box": box}] * 257})
    assert many.status_code == 422 and "256" in str(many.json()["detail"])
    points = post(api, "/streams/ids/prompts", {"objects": [{"points": [[20, 20]] * 1000}]})
    assert points.status_code == 422
    nan = requests.post(
        url(api, "/streams/ids/prompts"),
        data=b'{"objects": [{"box": [NaN, 0, 5, 5]}]}',
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=60,
    )
    assert nan.status_code == 422
    first = wait_for(
        "the stream's first frames",
        lambda: (
            (r := post(api, "/streams/ids/prompts", {"objects": [{"box": box}]})).status_code == 202
            and r
        ),
    )
    assert first.json()["object_ids"] == [1]  # the refused prompts saved no id
    requests.delete(url(api, "/streams/ids"), headers=AUTH, timeout=120).raise_for_status()


def test_camera_credentials_are_never_shown_or_logged(api):
    secret = "hunter2-" + uuid.uuid4().hex[:6]
    source = f"rtsp://admin:{secret}@127.0.0.1:9/stream"  # nothing listens: it keeps failing
    created = post(api, "/streams", {"id": "door", "source": source})
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "rtsp://***@127.0.0.1:9/stream"
    view = wait_for(
        "a drop", lambda: (v := get(api, "/streams/door").json())["ingest"]["drops"] and v
    )
    # Clients get a generic reason: FFmpeg's own ("Connection refused", "404 Not Found")
    # would make the server a port scanner; the ingest's log has it.
    assert view["ingest"]["drops"][0].endswith(SOURCE_FAILED)
    assert "refused" not in get(api, "/streams/door").text.lower()
    for text in (get(api, "/streams").text, get(api, "/streams/door").text):
        assert secret not in text
    requests.delete(url(api, "/streams/door"), headers=AUTH, timeout=120).raise_for_status()
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked


def test_serve_prints_a_token_only_when_it_made_it(api):
    from ausm_stream.deploy.serve import banner

    shown = banner(api)
    assert TOKEN not in shown and "?token=<api.token>" in shown
    made = banner(dataclasses.replace(api, token_made=True))
    assert f"?token={TOKEN}" in made and "api token (made at start" in made


def test_health_follows_the_workers_heartbeats(api, setup):
    """A stuck loop turns health 503 once its heartbeat is older than
    ``worker.heartbeat_timeout_s``; a failed one while the coordinator waits to run it again;
    then 200 again, and the pool's streams go on."""
    root, _ = setup
    wait_for("health", lambda: healthy(api))
    (worker,) = api.pool.workers().values()
    worker.inject_fault.remote("stall", 12.0)
    stuck = wait_for("a stale heartbeat", lambda: unhealthy(api))
    assert "worker-0: no heartbeat for" in stuck["workers"], stuck
    assert health(api).json() == {"status": "error"}  # anonymous: no detail
    wait_for("health again", lambda: healthy(api), timeout_s=30)

    path, _ = make_video(root, "after", 7)
    assert post(api, "/streams", {"id": "after", "source": str(path)}).status_code == 201
    wait_for("frames", lambda: segmented(api, "after") >= 8)
    worker.inject_fault.remote("raise")
    failed = wait_for("the failure", lambda: unhealthy(api), timeout_s=30)
    assert "worker-0: restart" in failed["workers"] and "InjectedFault" in failed["workers"]
    wait_for("health again", lambda: healthy(api), timeout_s=60)
    before = segmented(api, "after")
    wait_for("frames after the restart", lambda: segmented(api, "after") > before + 8)
    requests.delete(url(api, "/streams/after"), headers=AUTH, timeout=120).raise_for_status()


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
    # The server fetches no internal URL and reads no file outside ingest.media_root.
    metadata = {"id": "x", "source": "http://169.254.169.254/latest/meta-data"}
    internal = post(api, "/streams", metadata)
    assert internal.status_code == 422 and "source_hosts" in internal.json()["detail"]
    outside = post(api, "/streams", {"id": "x", "source": "/etc/hostname"})
    assert outside.status_code == 422 and "media_root" in outside.json()["detail"]
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
