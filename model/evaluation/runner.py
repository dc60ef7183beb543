"""Run a model over annotated videos in both modes and score it.

- **Prompted** (VOS): each instance is prompted with its ground-truth mask at the first frame
  where it is visible (the YouTube-VOS protocol; in DAVIS every object is in frame 0), then
  tracked; J, F and J&F follow DAVIS 2017.
- **Unprompted** (VIS): no prompt; each predicted track becomes one YouTube-VIS prediction
  whose category is its most frequent label and whose score is its mean score over the
  frames it was seen. AP, AP50, AP75, ID switches per 100 frames, and the share of full
  occlusions after which the object comes back under the same track id.
- **Long streams**: on videos longer than one window of 24 frames, also the prompted mean J
  per window, the last window's over the first's, and the share of prompted objects lost
  for good.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ausm_stream.model.ausm import AUSM
from ausm_stream.model.data.formats import resize_video
from ausm_stream.model.data.video import Video
from ausm_stream.model.evaluation.metrics import (
    Track,
    average_precision,
    davis_object_scores,
    id_switches,
    lost_for_good,
    occlusion_kept,
    window_failures,
    windowed_j,
)

WINDOW = 24
"""Frames per window of the long-stream figures (3 s at 8 frames a second)."""


@dataclass
class EvalReport:
    videos: int
    frames: int
    j: float
    f: float
    ap: float
    ap50: float
    ap75: float
    id_switches_per_100: float
    occlusions: int
    occlusions_kept_unprompted: float
    occlusions_kept_prompted: float
    window_j: list[float] = field(default_factory=list)
    """Prompted mean J on visible frames per window of ``WINDOW`` frames, over all videos."""
    lost_for_good: float = float("nan")
    """Share of prompted objects with no mask on any of their last ``WINDOW`` visible frames."""
    window_no_mask: list[float] = field(default_factory=list)
    """Per window, the share of visible (frame, prompted object) pairs without a mask."""
    window_on_other: list[float] = field(default_factory=list)
    """Per window, the share whose mask lies on another object (``window_failures``)."""

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2

    @property
    def last_over_first(self) -> float:
        """Mean J of the last window over the first: 1 when quality holds over the stream."""
        return self.window_j[-1] / self.window_j[0] if len(self.window_j) > 1 else float("nan")

    def table(self) -> str:
        rows = [
            ("videos / frames", f"{self.videos} / {self.frames}"),
            ("prompted J&F", f"{self.jf:.3f}"),
            ("prompted J", f"{self.j:.3f}"),
            ("prompted F", f"{self.f:.3f}"),
            ("unprompted AP", f"{self.ap:.3f}"),
            ("unprompted AP50", f"{self.ap50:.3f}"),
            ("unprompted AP75", f"{self.ap75:.3f}"),
            ("ID switches / 100 frames", f"{self.id_switches_per_100:.2f}"),
            (
                f"occlusions kept, unprompted (n={self.occlusions})",
                f"{self.occlusions_kept_unprompted:.3f}",
            ),
            (
                f"occlusions kept, prompted (n={self.occlusions})",
                f"{self.occlusions_kept_prompted:.3f}",
            ),
        ]
        if len(self.window_j) > 1:
            rows += [
                (f"prompted J, last / first {WINDOW} frames", f"{self.last_over_first:.3f}"),
                ("prompted objects lost for good", f"{self.lost_for_good:.3f}"),
            ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v:>9}" for k, v in rows]
        if len(self.window_j) > 1:
            lines.append(
                f"prompted, per {WINDOW} frames (visible frames): "
                "mean J, share without a mask, share on another object"
            )
            lines += [
                f"  {i * WINDOW:>5}-{(i + 1) * WINDOW - 1:<5} {j:.3f}  "
                f"{self.window_no_mask[i]:.3f}  {self.window_on_other[i]:.3f}"
                for i, j in enumerate(self.window_j)
                if len(self.window_j) <= 12 or i < 6 or i >= len(self.window_j) - 6
            ]
        return "\n".join(lines)


def run_prompted(model: AUSM, video: Video, seed: int = 0) -> np.ndarray:
    """Predicted masks (T, K, H, W) of each instance, prompted at its first visible frame."""
    visible = video.masks.any(axis=(2, 3))
    first = visible.argmax(axis=0)
    prompts = {}
    for t in sorted(set(first.tolist())):
        starting = [k for k in range(video.num_instances) if first[k] == t and visible[t, k]]
        if starting:
            prompts[t] = (torch.from_numpy(video.masks[t, starting]), starting)
    out = np.zeros_like(video.masks)
    results = model.segment_clip(video.frames, model.init_state(seed=seed), prompts)
    for t, r in enumerate(results):
        for k, obj in enumerate(r.prompt_object_ids.tolist()):
            if obj >= 0:
                out[t, obj] = r.masks[k].numpy()
    return out


def run_unprompted(model: AUSM, video: Video, seed: int = 0) -> list[Track]:
    t_len = video.num_frames
    masks: dict[int, np.ndarray] = {}
    scores: dict[int, list[float]] = {}
    labels: dict[int, Counter] = {}
    for t, r in enumerate(model.segment_clip(video.frames, model.init_state(seed=seed))):
        for k, tid in enumerate(r.track_ids.tolist()):
            if tid not in masks:
                masks[tid] = np.zeros((t_len, *video.size), dtype=bool)
                scores[tid], labels[tid] = [], Counter()
            masks[tid][t] = r.masks[k].numpy()
            scores[tid].append(float(r.scores[k]))
            labels[tid][int(r.labels[k])] += float(r.scores[k])
    return [
        Track(
            video.name,
            labels[tid].most_common(1)[0][0],
            masks[tid],
            float(np.mean(scores[tid])),
            tid,
        )
        for tid in masks
    ]


def evaluate(model: AUSM, videos: list[Video], progress: bool = True) -> EvalReport:
    model = model.eval()
    j_all, f_all, preds, gts = [], [], [], []
    windows: list[list[float]] = []
    lost: list[bool] = []
    failures: list[np.ndarray] = []  # per window: visible pairs, no mask, on another object
    frames = 0
    kept_u = kept_p = cases = 0
    for video in tqdm(videos, desc="eval", unit="video", disable=not progress):
        video = resize_video(video, model.cfg.image_size)
        frames += video.num_frames
        prompted = run_prompted(model, video)
        j, f = davis_object_scores(prompted, video.masks)
        j_all.extend(j.tolist())
        f_all.extend(f.tolist())
        for i, js in enumerate(windowed_j(prompted, video.masks, WINDOW)):
            if i == len(windows):
                windows.append([])
            windows[i].extend(js)
        lost.extend(lost_for_good(prompted, video.masks, WINDOW))
        for i, counts in enumerate(window_failures(prompted, video.masks, WINDOW)):
            if i == len(failures):
                failures.append(np.zeros(3, dtype=np.int64))
            failures[i] += counts
        tracks = run_unprompted(model, video)
        preds.extend(tracks)
        video_gts = [
            Track(video.name, int(video.classes[k]), video.masks[:, k], track_id=k)
            for k in range(video.num_instances)
        ]
        gts.extend(video_gts)
        for k, first, last in video.occlusions:
            cases += 1
            kept_u += occlusion_kept(tracks, video_gts[k], first, last)
            obj = [Track(video.name, 0, prompted[:, k], track_id=k)]
            kept_p += occlusion_kept(obj, video_gts[k], first, last)
    ap = average_precision(preds, gts)
    return EvalReport(
        videos=len(videos),
        frames=frames,
        j=float(np.mean(j_all)) if j_all else float("nan"),
        f=float(np.mean(f_all)) if f_all else float("nan"),
        ap=ap["AP"],
        ap50=ap["AP50"],
        ap75=ap["AP75"],
        id_switches_per_100=100 * id_switches(preds, gts) / max(frames, 1),
        occlusions=cases,
        occlusions_kept_unprompted=kept_u / cases if cases else float("nan"),
        occlusions_kept_prompted=kept_p / cases if cases else float("nan"),
        window_j=[float(np.mean(w)) for w in windows if w],
        lost_for_good=float(np.mean(lost)) if lost else float("nan"),
        window_no_mask=[float(f[1] / f[0]) for f in failures if f[0]],
        window_on_other=[float(f[2] / f[0]) for f in failures if f[0]],
    )
