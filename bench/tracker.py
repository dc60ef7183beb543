"""Benchmark of the tracker over a batched step: reads to the host and time per stream-frame.

The tracker decides per stream and frame which tracks are shown, start, end or change
identity. ``AUSMConfig.tracker`` chooses how: ``per_stream``, the reference rules one stream
at a time, read tensor values to the host as they decide (on a GPU every read waits for the
device); ``batched`` (``model/tracking/batched.py``) decides the quiet frames of all streams
at once in a constant number of reads and sends only frames with an event (a track starts,
ends, repeats another, trades its identity or takes a prompt) through the reference rules.

Runs the shipped shapes weights on N synthetic shapes videos (a third of them prompted at
their first frame), both trackers side by side on the same frames, and prints per step:
reads to the host in the tracker and in the whole step, the share of quiet stream-frames,
and the tracker's time per stream-frame, with the ratios per_stream / batched measured in
one run. Both trackers' tracks are compared too: they must be equal.

    .venv/bin/python bench/tracker.py                     # 16 and 64 streams, 24 frames
    .venv/bin/python bench/tracker.py --streams 16 --frames 8

Targets (issue 29): reads per batched step a constant, at most 8, whatever the number of
streams; tracker time per stream-frame at least 10x less than the reference at 64 streams.
"""

from __future__ import annotations

import argparse
import time

import torch

import ausm_stream.model.ausm as ausm_module
import ausm_stream.model.tracking.batched as batched_module
from ausm_stream.model import AUSM, DEFAULT_WEIGHTS
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.model.device import HostReads

FIELDS = ("track_ids", "labels", "scores", "masks", "boxes", "prompt_object_ids")


class Timed:
    """Wraps the model module's tracker entry points to time them and count their reads."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.reads = 0
        self.calls = 0

    def wrap(self, func):
        def timed(*args, **kwargs):
            with HostReads() as reads:
                start = time.perf_counter()
                out = func(*args, **kwargs)
                self.seconds += time.perf_counter() - start
            self.reads += reads.total
            self.calls += 1
            return out

        return timed


def run(streams: int, frames: int) -> None:
    torch.set_num_threads(1)
    models = {
        mode: AUSM.from_weights(DEFAULT_WEIGHTS, tracker=mode, batch_cells=1 << 30)
        for mode in ("per_stream", "batched")
    }
    size = models["batched"].cfg.image_size
    videos = [
        generate_video("test", i, ShapesSpec(size=size, frames=frames)) for i in range(streams)
    ]
    states = {mode: [m.init_state(seed=i) for i in range(streams)] for mode, m in models.items()}
    for mode, model in models.items():
        for i in range(0, streams, 3):
            masks = torch.as_tensor(videos[i].masks[0])
            masks = masks[masks.flatten(1).any(1)][:2]
            if len(masks):
                model.add_prompt(states[mode][i], masks, list(range(len(masks))))
    timers = {mode: Timed() for mode in models}
    step_reads = dict.fromkeys(models, 0)
    originals = ausm_module.update_batch, ausm_module.update_stream
    events = Timed()  # the frames update_batch sends through the reference rules
    batched_module.update_stream = events.wrap(originals[1])
    unequal = 0
    try:
        for t in range(frames):
            batch = torch.stack([torch.as_tensor(v.frames[t]) for v in videos])
            results = {}
            for mode, model in models.items():
                ausm_module.update_batch = timers[mode].wrap(originals[0])
                ausm_module.update_stream = timers[mode].wrap(originals[1])
                with HostReads() as reads:
                    results[mode] = model.step(states[mode], batch)
                step_reads[mode] += reads.total
            for a, b in zip(results["batched"], results["per_stream"], strict=True):
                unequal += any(not torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)
    finally:
        ausm_module.update_batch, ausm_module.update_stream = originals
        batched_module.update_stream = originals[1]
    per_frame = {mode: timers[mode].seconds * 1e3 / (streams * frames) for mode in models}
    print(
        f"{streams:>3} streams x {frames} frames: quiet stream-frames "
        f"{1 - events.calls / (streams * frames):.0%}; results unequal: {unequal}"
    )
    for mode in models:
        print(
            f"    {mode:>10}: reads per step: tracker {timers[mode].reads / frames:7.1f}, "
            f"whole step {step_reads[mode] / frames:7.1f}; tracker {per_frame[mode]:.2f} ms "
            "per stream-frame"
        )
    reads = timers["per_stream"].reads / max(1, timers["batched"].reads)
    speed = per_frame["per_stream"] / per_frame["batched"]
    print(f"    per_stream / batched: reads {reads:.1f}x, tracker time {speed:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--frames", type=int, default=24)
    args = parser.parse_args()
    for n in args.streams:
        run(n, args.frames)


if __name__ == "__main__":
    main()
