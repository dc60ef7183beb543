"""``ausm-stream demo``: the whole pipeline on this machine, with no configuration at all.

Writes four synthetic H.264 videos and, where Debian's ``opencv-doc`` is installed (``make
demo`` installs it where apt exists), the first seconds of OpenCV's surveillance clip
``vtest.avi`` (a fixed camera over a campus path: pedestrians, a van) as a fifth stream,
``vtest``; without it the demo says so and runs the synthetic ones alone. It starts the
embedded broker, a local object store directory, a local Ray and the control plane (its URL
and live page are printed), adds the videos through it as concurrent streams (ingest Ray
actors), segments them with the default weights in SegmentationWorker actors (one per core,
each owning part of the frames topic's partitions), writes the Parquet dataset, prints a
summary table, renders every stream's tracks over its video (``ausm-stream render``) and
prints queries to try. Ingest letterboxes each video into the model's input size.
Everything goes under ``./ausm-demo/`` (or ``--out``)::

    ausm-demo/videos/cam-<i>.mp4, vtest.mp4  the inputs
    ausm-demo/store/tracks/...             the Parquet dataset (and frames/)
    ausm-demo/overlays/<stream>.mp4        the video with the masks painted on
    ausm-demo/overlays/<stream>.png        a contact sheet of 8 of its frames
    ausm-demo/logs/                        broker log
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import time
from pathlib import Path

import av
import numpy as np
import ray
from tqdm import tqdm

from ausm_stream.deploy.render import render
from ausm_stream.deploy.serve import control_plane, port_is_free
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.model.versions import weights_info
from ausm_stream.operators.status import PoolStatus
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.query import TrackDataset
from ausm_stream.pipeline.storage import open_store
from ausm_stream.pipeline.video_files import write_h264

SOURCE_SIZE = (144, 256)
"""16:9, as cameras are: ingest letterboxes it (``ingest.fit``) into the 128x128 input at
half size, so the shapes keep the proportions the model was trained on."""


VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
"""OpenCV's surveillance clip (768 x 576, 10 fps), from Debian's ``opencv-doc``."""


def write_videos(folder: Path, streams: int, frames: int, fps: int) -> dict[str, Path]:
    spec = ShapesSpec(size=SOURCE_SIZE, frames=frames, min_radius=16, max_radius=40, max_speed=5.0)
    videos = {
        f"cam-{i}": write_h264(
            folder / f"cam-{i}.mp4", generate_video("test", 1000 + i, spec).frames, fps=fps
        )
        for i in tqdm(range(streams), desc="writing videos", unit="video")
    }
    real = write_real_clip(folder / "vtest.mp4", frames, fps)
    return {**videos, "vtest": real} if real else videos


def write_real_clip(path: Path, frames: int, fps: int) -> Path | None:
    """The first ``frames`` frames of ``vtest.avi`` (played at ``fps``), or None, saying why,
    where Debian's opencv-doc is not installed."""
    if not VTEST.is_file():
        print(
            f"{VTEST} is missing (Debian package opencv-doc: apt-get install opencv-doc): "
            "the demo runs its synthetic videos only"
        )
        return None
    with av.open(str(VTEST)) as container:
        decoded = container.decode(video=0)
        clip = [f.to_ndarray(format="rgb24") for f in itertools.islice(decoded, frames)]
    return write_h264(path, np.stack(clip), fps=fps)


def run_demo(
    out: Path,
    streams: int = 4,
    frames: int = 64,
    fps: int = 8,
    weights: str = "default",
    port: int = 8000,
    linger_s: float = 0.0,
) -> PoolStatus:
    out = out.resolve()
    # Each demo starts from an empty store: its embedded broker starts with empty topics, so
    # checkpoints and registered streams of an earlier demo would describe records that no
    # longer exist.
    shutil.rmtree(out / "store", ignore_errors=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    cfg = PipelineConfig.from_dict(
        {
            "storage": {"url": f"file://{out / 'store'}"},
            "model": {"weights": weights},
            "ingest": {"media_root": str(out / "videos")},  # the API reads the demo's videos
            "api": {"port": port if port and port_is_free("127.0.0.1", port) else 0},
        }
    )
    _, version = weights_info(cfg.model.weights)  # fail early, before starting anything
    videos = write_videos(out / "videos", streams, frames, fps)
    started = time.monotonic()
    with control_plane(cfg, out / "logs") as cp:
        print(f"\nAPI: {cp.url} (token {cp.token})\nlive page: {cp.page_url()}\n", flush=True)
        for sid, path in videos.items():  # what POST /streams does
            ray.get(cp.manager.add.remote(sid, str(path)))
        total = len(videos) * frames
        with tqdm(total=total, desc="segmenting", unit="frame") as bar:
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                now = cp.pool.status()
                bar.update(sum(s.frames_out for s in now.streams.values()) - bar.n)
                if all(sid in now.streams and now.streams[sid].ended for sid in videos):
                    break
                time.sleep(0.5)
        status = cp.pool.status()
        ingested = {i.stream.id: i.ingest for i in ray.get(cp.manager.list.remote())}
        elapsed = time.monotonic() - started
        if linger_s > 0:
            print(f"serving {cp.page_url()} for {linger_s:.0f} s (Ctrl-C stops)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(linger_s)

    overlays = out / "overlays"
    with TrackDataset(open_store(cfg.storage)) as data:
        for sid, path in videos.items():
            render(data, sid, path, overlays / f"{sid}.mp4")
            render(data, sid, path, overlays / f"{sid}.png")
    _print_summary(status, ingested, elapsed, version, out)
    return status


def _print_summary(
    status: PoolStatus,
    ingested: dict,
    elapsed: float,
    version: str,
    out: Path,
) -> None:
    print(f"\nmodel {version}; {elapsed:.1f} s wall clock, dead letters: {status.dead_letters}")
    ranges = ", ".join(str(w.partitions) for w in status.workers)
    print(f"{len(status.workers)} workers, partitions {ranges}")
    print(f"{'stream':<8} {'ingested':>9} {'segmented':>10} {'tracks':>7} {'fps':>7}")
    for sid, s in status.streams.items():
        print(f"{sid:<8} {ingested[sid].frames:>9} {s.frames_out:>10} {s.tracks:>7} {s.fps:>7.1f}")
    for sid, report in ingested.items():
        for line in report.drops:
            print(f"{sid}: source dropped at {line}")
    store = out / "store"
    print(f"\nParquet dataset: {store / 'tracks'} (and frames/)")
    print(f"overlays:        {out / 'overlays'}/ (<stream>.mp4, and contact sheets <stream>.png)")
    print("query it:")
    print(f'  ausm-stream query --store {store} "SELECT * FROM track_summary LIMIT 10"')
    print(f'  ausm-stream query --store {store} "SELECT * FROM tracks_by_class(INTERVAL 1 MINUTE)"')
