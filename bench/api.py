"""The control plane under load: request latency, and what the load costs the pipeline.

    .venv/bin/python bench/api.py                 # ~2 minutes
    .venv/bin/python bench/api.py --rounds 3 --window 20

The whole control plane runs here (``ausm-stream serve``'s :func:`control_plane`: embedded
broker, local store, local Ray, the Serve app on loopback) with one worker, leaving the
other core to the API, ingest and this script. ``--streams`` live streams (files produced
at 8 fps, as cameras deliver them) feed the worker more frames than it segments, so it runs
at its capacity throughout. Windows of ``--window`` seconds alternate (quiet, loaded, quiet,
loaded, ...); in a loaded one, client threads send ``GET /streams/{id}`` at ``--get-rate``
and ``POST /streams/{id}/prompts`` (a box) at ``--prompt-rate`` requests a second, bounded by
``--max-requests`` and by the window's end.

Printed: p50 and p99 latency of each route over the loaded windows, and the pipeline's
throughput (frames segmented per second, all streams) loaded over quiet, medians of the
windows. Target: at least 0.95.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

import numpy as np
import ray
import requests

from ausm_stream.deploy.serve import ControlPlane, control_plane
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.video_files import write_h264

TOKEN = "bench"
FPS = 8
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def make_videos(root: Path, count: int, frames: int) -> list[Path]:
    spec = ShapesSpec(size=(128, 128), frames=frames)
    return [
        write_h264(root / f"v{i}.mp4", generate_video("test", 500 + i, spec).frames, fps=FPS)
        for i in range(count)
    ]


def segmented(cp: ControlPlane) -> int:
    return sum(s.frames_out for s in cp.pool.status().streams.values())


class Load:
    """Client threads at fixed rates until stopped or ``max_requests`` are sent."""

    def __init__(self, cp: ControlPlane, ids: list[str], args: argparse.Namespace) -> None:
        self.cp, self.ids, self.args = cp, ids, args
        self.latency: dict[str, list[float]] = {"get": [], "prompt": []}
        self.errors: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, args=("get", args.get_rate)),
            threading.Thread(target=self._loop, args=("prompt", args.prompt_rate)),
        ]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self.threads:
            t.join()

    def _loop(self, kind: str, rate: float) -> None:
        session = requests.Session()
        session.headers.update(HEADERS)
        rng = np.random.default_rng(0 if kind == "get" else 1)
        due = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                if self.sent >= self.args.max_requests:
                    return
                self.sent += 1
            sid = self.ids[int(rng.integers(len(self.ids)))]
            started = time.perf_counter()
            if kind == "get":
                resp = session.get(f"{self.cp.url}/streams/{sid}", timeout=60)
            else:
                x, y = (int(v) for v in rng.integers(0, 96, 2))
                # One object per stream, prompted again and again: the model replaces its
                # mask, so the work per frame stays that of a quiet window.
                body = {"objects": [{"object_id": 1, "box": [x, y, x + 24, y + 24]}]}
                resp = session.post(f"{self.cp.url}/streams/{sid}/prompts", json=body, timeout=60)
            took = time.perf_counter() - started
            if resp.status_code in (200, 202):
                self.latency[kind].append(took)
            else:
                self.errors.append(f"{kind} {resp.status_code} {resp.text[:200]}")
            due += 1 / rate
            self._stop.wait(max(0.0, due - time.monotonic()))


def descendants(root: int) -> set[int]:
    """Every process started under ``root`` (Ray's, the broker), from ``/proc``."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def pin_worker_apart(cp: ControlPlane) -> str:
    """The worker alone on core 0, everything else of this run on the other cores: the
    layout of a deployment, where workers own their devices and the API runs elsewhere."""
    workers = {ray.get(h.pid.remote()) for h in cp.pool.workers().values()}
    cores = sorted(os.sched_getaffinity(0))
    others = descendants(os.getpid()) | {os.getpid()}
    for pid in others - workers:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cores[1:])
    for pid in workers:
        os.sched_setaffinity(pid, cores[:1])
    rest = len(others - workers)
    return f"worker {sorted(workers)} on core {cores[0]}, {rest} other processes on {cores[1:]}"


def window(cp: ControlPlane, seconds: float, load: Load | None) -> float:
    """Frames segmented per second over ``seconds`` (under ``load``, if given)."""
    before, started = segmented(cp), time.monotonic()
    if load is None:
        time.sleep(seconds)
    else:
        with load:
            time.sleep(seconds)
    return (segmented(cp) - before) / (time.monotonic() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="quiet/loaded pairs of windows")
    ap.add_argument("--window", type=float, default=12.0, help="seconds per window")
    ap.add_argument("--streams", type=int, default=6, help="live streams at 8 fps each")
    ap.add_argument("--get-rate", type=float, default=10.0)
    ap.add_argument("--prompt-rate", type=float, default=2.0)
    ap.add_argument("--max-requests", type=int, default=2000, help="per loaded window")
    ap.add_argument(
        "--pin",
        action="store_true",
        help="the worker alone on one core, the API, ingest and broker on the others",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warm_up_s = 8.0
    frames = int(FPS * (warm_up_s + 2 * args.rounds * args.window + 10))  # live throughout
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        videos = make_videos(root, min(args.streams, 3), frames)
        cfg = PipelineConfig.from_dict(
            {
                "storage": {"url": f"file://{root / 'store'}"},
                "ray": {"num_cpus": 2},
                "ingest": {"pace": True, "media_root": str(root)},
                "worker": {"count": 1},
                "api": {"port": 0, "token": TOKEN},
            }
        )
        quiet, loaded = [], []
        latency: dict[str, list[float]] = {"get": [], "prompt": []}
        errors: list[str] = []
        with control_plane(cfg) as cp:
            ids = [f"cam-{i}" for i in range(args.streams)]
            for i, sid in enumerate(ids):
                ray.get(cp.manager.add.remote(sid, str(videos[i % len(videos)])))
            if args.pin:
                print("pinned:", pin_worker_apart(cp), flush=True)
            time.sleep(warm_up_s)  # every stream has frames and the worker a backlog
            for r in range(args.rounds):
                quiet.append(window(cp, args.window, None))
                load = Load(cp, ids, args)
                loaded.append(window(cp, args.window, load))
                for kind, values in load.latency.items():
                    latency[kind].extend(values)
                errors.extend(load.errors)
                print(
                    f"round {r}: quiet {quiet[-1]:.1f} fps, loaded {loaded[-1]:.1f} fps "
                    f"({load.sent} requests)",
                    flush=True,
                )
            lag = max(s.lag_frames for s in cp.pool.status().streams.values())
    for kind, route in [("get", "GET /streams/{id}"), ("prompt", "POST /streams/{id}/prompts")]:
        values = np.array(latency[kind]) * 1e3
        if len(values):
            print(
                f"{route:<28} {len(values):>5} requests  p50 {np.percentile(values, 50):7.1f} ms"
                f"  p99 {np.percentile(values, 99):7.1f} ms"
            )
    print(
        f"throughput: quiet {median(quiet):.1f} fps, loaded {median(loaded):.1f} fps, "
        f"ratio {median(loaded) / median(quiet):.3f} (target >= 0.95); "
        f"the worker was {lag} frames behind at the end (saturated)"
    )
    if errors:
        print(f"{len(errors)} failed requests, e.g. {errors[:3]}")


if __name__ == "__main__":
    main()
