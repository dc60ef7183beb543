"""Seconds per training iteration, parallel (teacher-forced, all frames at once) vs. iterative
(frame by frame through the recurrent step), at several clip lengths.

    .venv/bin/python bench/train_speed.py                  # clips of 1, 4, 8, 16 frames
    .venv/bin/python bench/train_speed.py --lengths 4 8 --reps 3

Both modes compute the same loss (tests/model/test_training.py checks it); the paper
reports 1.6x, 2.1x and 2.5x speed-ups at 4, 8 and 16 frames. Target here: >= 2.5x at 16.
Rounds of the two modes alternate and medians are reported, since the machine is noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ausm_stream.model import AUSM, AUSMConfig
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.model.training.loop import forward_iterative
from ausm_stream.model.training.objective import clip_loss
from ausm_stream.model.training.teacher import make_batch


def iteration(model: AUSM, opt: torch.optim.Optimizer, batch, mode: str) -> float:
    start = time.perf_counter()
    if mode == "parallel":
        out = model.forward_parallel(batch.frames, batch.history_masks, batch.history_active)
    else:
        out = forward_iterative(model, batch)
    loss, _ = clip_loss(out, batch, model.cfg)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--reps", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = AUSMConfig.preset("tiny")
    model = AUSM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    print(
        f"tiny preset {cfg.image_size[0]} px, batch {args.batch}, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"{'frames':>6} {'parallel s/it':>14} {'iterative s/it':>15} {'speed-up':>9}")
    for length in args.lengths:
        spec = ShapesSpec(size=cfg.image_size, frames=length)
        videos = [generate_video("train", i, spec) for i in range(args.batch)]
        batch = make_batch(videos, cfg, np.random.default_rng(0))
        times = {"parallel": [], "iterative": []}
        for mode in times:  # warm-up
            iteration(model, opt, batch, mode)
        for _ in range(args.reps):
            for mode in times:
                times[mode].append(iteration(model, opt, batch, mode))
        par, it = statistics.median(times["parallel"]), statistics.median(times["iterative"])
        print(f"{length:>6} {par:>14.3f} {it:>15.3f} {it / par:>8.2f}x")


if __name__ == "__main__":
    main()
