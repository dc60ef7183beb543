"""Benchmark of the streaming model step (tiny preset): speed, batching, state size, memory.

Runs the shipped weights (``DEFAULT_WEIGHTS``; at 256 px the same weights on a larger grid)
on synthetic shapes videos, one per stream, so the tracker keeps the tracks it keeps in
service. (Random weights, used before, fill every ID slot with noise tracks and measure
bookkeeping no user sees.)

Prints, for each input size: frames/s of one stream; throughput of N streams stepped one by
one, as one batch, and as one batch in lanes (``AUSMConfig.step_lanes`` = cores, one torch
thread per lane: the serving configuration on a CPU), with ratios to one by one (measured
in the same run, rounds interleaved, medians, since the machines are noisy); bytes of one
stream's state. Then RSS over a long run of one stream.

    .venv/bin/python bench/model_step.py                 # 128 and 256 px, 2,000-step RSS run
    .venv/bin/python bench/model_step.py --sizes 128 --rss-steps 200

Then the real model (``--real WEIGHTS``, default the shipped ``real-lite0`` weights when
present; the ``real`` preset: frozen EfficientNet-Lite0, 224 x 384 frames): frames/s of one
stream on one core (one torch thread) over generated real-imagery test videos, and its state
bytes.

Targets (issue 2): batched N = 16 at least 2x one by one; RSS growth under 2% over 2,000
steps; state bytes constant. Real model (issue 27): one stream at least 8 frames/s on one
core (one 8-fps camera per core). The line "one core" bounds what batching can give here: a
batch only helps as far as a frame costs less in it than alone on one core, and lanes at
best multiply one core's batched throughput by the number of cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ausm_stream.model import AUSM, DEFAULT_WEIGHTS
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.model.data.real import RealSpec, generate_real_video

REAL_WEIGHTS = Path(DEFAULT_WEIGHTS).parent / "real-lite0.safetensors"


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def build(size: int, **runtime: object) -> AUSM:
    return AUSM.from_weights(DEFAULT_WEIGHTS, image_size=(size, size), **runtime)


def videos(n: int, size: int, seed: int = 0, length: int = 24) -> torch.Tensor:
    """(n, length, size, size, 3) uint8: n synthetic test videos, shapes scaled to the size."""
    scale = size / 128
    spec = ShapesSpec(
        size=(size, size),
        frames=length,
        min_radius=8 * scale,
        max_radius=20 * scale,
        max_speed=3 * scale,
    )
    return torch.from_numpy(
        np.stack([generate_video("test", seed + i, spec).frames for i in range(n)])
    )


class Threads:
    """Run a block with this many torch intra-op threads."""

    def __init__(self, n: int) -> None:
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)


def throughputs(model: AUSM, lanes: AUSM, n: int, size: int, rounds: int) -> dict[str, float]:
    """Median frames/s over n streams: one batched step (all threads on each op), one batched
    step in lanes (one stream group per core, one thread each), and n single-stream steps;
    and, on one core (one thread), n single-stream steps and one batched step."""
    clips = videos(n, size, seed=n)
    default = torch.get_num_threads()
    runs = {
        "batched": (model, default),
        "lanes": (lanes, 1),
        "alone": (model, default),
        "alone_1core": (model, 1),
        "batched_1core": (model, 1),
    }
    states = {k: [m.init_state(seed=i) for i in range(n)] for k, (m, _) in runs.items()}

    steps = dict.fromkeys(runs, 0)

    def once(kind: str) -> float:
        m, threads = runs[kind]
        fr = clips[:, steps[kind] % clips.shape[1]]
        steps[kind] += 1
        t = time.perf_counter()
        with Threads(threads):
            if kind.startswith("alone"):
                for i, s in enumerate(states[kind]):
                    m.step([s], fr[i : i + 1])
            else:
                m.step(states[kind], fr)
        return n / (time.perf_counter() - t)

    for kind in runs:  # warm-up
        once(kind)
    fps: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for kind in runs:
            fps[kind].append(once(kind))
    return {k: statistics.median(v) for k, v in fps.items()}


def real_preset(weights: Path, rounds: int, frames: int = 48) -> tuple[float, int]:
    """Median frames/s of one stream on one core, and the stream's state bytes."""
    model = AUSM.from_weights(weights)
    spec = RealSpec(size=model.cfg.image_size, frames=frames)
    clips = [torch.from_numpy(generate_real_video("test", i, spec).frames) for i in range(2)]
    fps = []
    with Threads(1):
        model.warm_up()
        for r in range(rounds):
            state = model.init_state(seed=r)
            clip = clips[r % len(clips)]
            t = time.perf_counter()
            for frame in clip:
                model.step([state], frame[None])
            fps.append(len(clip) / (time.perf_counter() - t))
    return statistics.median(fps), len(state.to_bytes())


def rss_run(steps: int, size: int) -> dict[str, float]:
    model = build(size)
    state = model.init_state(seed=1)
    clip = videos(1, size, seed=99)[0]
    warmup = min(100, steps // 10)
    sizes = []
    start = 0.0
    for t in tqdm(range(steps), desc=f"RSS run {size}px", unit="frame", leave=False):
        model.step([state], clip[t % len(clip)][None])
        if t + 1 == warmup:
            start = rss_mb()
            sizes.append(len(state.to_bytes()))
    sizes.append(len(state.to_bytes()))
    end = rss_mb()
    return {
        "rss_start_mb": start,
        "rss_end_mb": end,
        "growth_pct": 100 * (end - start) / start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
        "state_bytes_constant": float(len(set(sizes)) == 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rss-steps", type=int, default=2000)
    parser.add_argument(
        "--real",
        type=Path,
        default=REAL_WEIGHTS if REAL_WEIGHTS.is_file() else None,
        metavar="WEIGHTS",
        help="weights of the real preset to time (default: the shipped ones, when present)",
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}")
    cores = os.cpu_count() or 1
    for size in args.sizes:
        model = build(size)
        lanes = build(size, step_lanes=cores)
        single = throughputs(model, lanes, 1, size, args.rounds)["alone"]
        state_bytes = len(model.init_state().to_bytes())
        print(
            f"\n== tiny preset, {size}x{size}: one stream {single:.1f} frames/s, "
            f"state {state_bytes / 1e6:.2f} MB per stream"
        )
        print(
            f"{'N':>4} {'one-by-one':>11} {'batched':>8} {'ratio':>6} "
            f"{f'in {cores} lanes':>11} {'ratio':>6}   (frames/s)"
        )
        per_core = {}
        for n in args.streams:
            r = throughputs(model, lanes, n, size, args.rounds)
            alone = r["alone"]
            print(
                f"{n:>4} {alone:>11.1f} {r['batched']:>8.1f} {r['batched'] / alone:>6.2f} "
                f"{r['lanes']:>11.1f} {r['lanes'] / alone:>6.2f}"
            )
            per_core[n] = r
        n = max(per_core)
        r = per_core[n]
        print(
            f"one core, N = {n}: {1e3 / r['alone_1core']:.1f} ms a frame one by one, "
            f"{1e3 / r['batched_1core']:.1f} ms in one batch; so {cores} lanes can give at most "
            f"{cores * r['batched_1core'] / r['alone']:.2f}x one by one (perfect scaling)"
        )
    if args.real:
        fps, state_bytes = real_preset(args.real, args.rounds)
        cfg = AUSM.read_config(args.real)
        h, w = cfg.image_size
        print(
            f"\n== real model ({args.real.name}), {h}x{w}: one stream on one core "
            f"{fps:.1f} frames/s (target 8), state {state_bytes / 1e6:.2f} MB per stream"
        )
    if args.rss_steps:
        r = rss_run(args.rss_steps, args.sizes[0])
        print(
            f"\n== {args.rss_steps} steps of one stream at {args.sizes[0]}px: RSS "
            f"{r['rss_start_mb']:.1f} MB after warm-up -> {r['rss_end_mb']:.1f} MB "
            f"({r['growth_pct']:+.2f}%), peak {r['peak_rss_mb']:.1f} MB, state bytes "
            f"{'constant' if r['state_bytes_constant'] else 'CHANGED'}"
        )


if __name__ == "__main__":
    main()
