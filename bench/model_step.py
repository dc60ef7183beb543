"""Benchmark of the streaming model step (tiny preset): speed, batching, state size, memory.

Prints, for each input size: frames/s of one stream; throughput of N streams stepped as one
batch vs. one by one (ratios measured in the same run, rounds interleaved, medians, since the
machines are noisy); bytes of one stream's state. Then RSS over a long run of one stream.

    .venv/bin/python bench/model_step.py                 # 128 and 256 px, 2,000-step RSS run
    .venv/bin/python bench/model_step.py --sizes 128 --rss-steps 200

Targets (issue 2): batched N = 16 at least 2x one by one; RSS growth under 2% over 2,000
steps; state bytes constant.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch
from tqdm import tqdm

from ausm_stream.model import AUSM, AUSMConfig


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def build(size: int) -> AUSM:
    torch.manual_seed(0)
    return AUSM(AUSMConfig.preset("tiny", image_size=(size, size))).eval()


def frames(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)


def batched_vs_single(model: AUSM, n: int, size: int, rounds: int) -> tuple[float, float]:
    """Median frames/s of one batched step over n streams and of n single-stream steps."""
    fr = frames(n, size, seed=n)
    batch = [model.init_state(seed=i) for i in range(n)]
    alone = [model.init_state(seed=i) for i in range(n)]
    model.step(batch, fr)
    for i, s in enumerate(alone):
        model.step([s], fr[i : i + 1])
    fps_batch, fps_alone = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        model.step(batch, fr)
        fps_batch.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        for i, s in enumerate(alone):
            model.step([s], fr[i : i + 1])
        fps_alone.append(n / (time.perf_counter() - t))
    return statistics.median(fps_batch), statistics.median(fps_alone)


def rss_run(steps: int, size: int) -> dict[str, float]:
    model = build(size)
    state = model.init_state(seed=1)
    fr = frames(16, size, seed=99)
    warmup = min(100, steps // 10)
    sizes = []
    start = 0.0
    for t in tqdm(range(steps), desc=f"RSS run {size}px", unit="frame", leave=False):
        model.step([state], fr[t % 16 : t % 16 + 1])
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
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}")
    for size in args.sizes:
        model = build(size)
        single = batched_vs_single(model, 1, size, args.rounds)[1]
        state_bytes = len(model.init_state().to_bytes())
        print(
            f"\n== tiny preset, {size}x{size}: one stream {single:.1f} frames/s, "
            f"state {state_bytes / 1e6:.2f} MB per stream"
        )
        print(f"{'N':>4} {'batched fps':>12} {'one-by-one fps':>15} {'ratio':>6}")
        for n in args.streams:
            fb, fa = batched_vs_single(model, n, size, args.rounds)
            print(f"{n:>4} {fb:>12.1f} {fa:>15.1f} {fb / fa:>6.2f}")
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
