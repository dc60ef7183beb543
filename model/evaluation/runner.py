"""Run a model over annotated videos in both modes and score it.

The model sees every video's frames resized to its input size (``cfg.image_size``);
everything is scored at the annotation's own resolution, predicted masks upsampled to it
(nearest), as the official DAVIS code scores (``scoring.py``). A DAVIS video read at 240p
is scored at 240x427, whatever the model's input.

- **Prompted** (VOS): each instance is prompted with its ground-truth mask (resized to the
  model's input) at the first frame where it is visible (the YouTube-VOS protocol; in DAVIS
  every object is in frame 0), then tracked; J, F and J&F follow DAVIS 2017 (first and last
  frame left out), averaged over objects.
- **Copy-first-mask baseline**: J&F of copying each object's first visible ground-truth
  mask to every later frame, scored the same way; no model involved. A model below it has
  learnt nothing a still mask would not give.
- **Unprompted** (VIS): no prompt; each predicted track becomes one YouTube-VIS prediction
  whose category is its most frequent label and whose score is its mean score over the
  frames it was seen. AP, AP50, AP75, ID switches per 100 frames, and the share of full
  occlusions after which the object comes back under the same track id. AP counts tracks
  on unannotated objects as false positives; on data that annotates only the main objects
  (DAVIS) read **object recall** and **tracks per object** instead (``metrics.Coverage``),
  which look only at annotated objects.
- **Long streams**: on videos longer than one window of 24 frames, also the prompted mean J
  per window, the last window's over the first's, and the share of prompted objects lost
  for good.
- **Speed**: frames the model output per second of wall clock spent in its passes
  (prompted and unprompted, all videos), with torch's thread count; resizing and scoring
  are not counted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ausm_stream.model.ausm import AUSM
from ausm_stream.model.data.formats import resize_video
from ausm_stream.model.data.video import Video
from ausm_stream.model.evaluation.metrics import Coverage, Track, ap_from_counts
from ausm_stream.model.evaluation.scoring import WINDOW, VideoScores, score_video
from ausm_stream.model.state import StreamState
from ausm_stream.model.tracking import StepResult


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
    baseline_j: float = float("nan")
    """J of the copy-first-mask baseline (each object's first visible mask, held still)."""
    baseline_f: float = float("nan")
    object_recall: float = float("nan")
    """Unprompted: share of visible annotated (object, frame) pairs some track covers."""
    tracks_per_object: float = float("nan")
    """Unprompted: distinct tracks covering an annotated object, over objects covered."""
    fps: float = float("nan")
    """Frames the model output per second spent in its passes (prompted + unprompted)."""
    threads: int = 0
    """torch's intra-op thread count during the run."""
    scored_at: str = ""
    """The annotation size(s) scored at, and the model's input size."""
    longest: str = ""
    """The longest video (most frames): long-stream quality on one real stream."""
    longest_window_j: list[float] = field(default_factory=list)
    """Its prompted mean J per window of ``WINDOW`` frames."""

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2

    @property
    def baseline_jf(self) -> float:
        return (self.baseline_j + self.baseline_f) / 2

    @property
    def last_over_first(self) -> float:
        """Mean J of the last window over the first: 1 when quality holds over the stream."""
        return _last_over_first(self.window_j)

    @property
    def longest_last_over_first(self) -> float:
        """The same on the longest video alone."""
        return _last_over_first(self.longest_window_j)

    def table(self) -> str:
        rows = [
            ("videos / frames", f"{self.videos} / {self.frames}"),
            ("scored at (H x W)", self.scored_at),
            ("prompted J&F", f"{self.jf:.3f}"),
            ("prompted J", f"{self.j:.3f}"),
            ("prompted F", f"{self.f:.3f}"),
            ("copy-first-mask baseline J&F", f"{self.baseline_jf:.3f}"),
            ("unprompted AP", f"{self.ap:.3f}"),
            ("unprompted AP50", f"{self.ap50:.3f}"),
            ("unprompted AP75", f"{self.ap75:.3f}"),
            ("unprompted object recall (IoU 0.5)", f"{self.object_recall:.3f}"),
            ("unprompted tracks per covered object", f"{self.tracks_per_object:.2f}"),
            ("ID switches / 100 frames", f"{self.id_switches_per_100:.2f}"),
        ]
        if self.occlusions:
            rows += [
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
        if len(self.longest_window_j) > 1:
            windows = " ".join(f"{j:.3f}" for j in self.longest_window_j)
            rows.append(
                (
                    f"longest video ({self.longest}), last / first {WINDOW} frames",
                    f"{self.longest_last_over_first:.3f}",
                )
            )
            rows.append((f"  its mean J per {WINDOW} frames", windows))
        rows.append((f"model frames / s ({self.threads} torch threads)", f"{self.fps:.1f}"))
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


@dataclass
class ModelClock:
    """Wall-clock seconds spent in the model's passes and the frames they output."""

    seconds: float = 0.0
    frames: int = 0

    def segment_clip(
        self,
        model: AUSM,
        frames: np.ndarray,
        state: StreamState,
        prompts: dict[int, tuple[torch.Tensor, list[int]]] | None = None,
    ) -> list[StepResult]:
        start = time.perf_counter()
        results = model.segment_clip(frames, state, prompts)
        self.seconds += time.perf_counter() - start
        self.frames += len(results)
        return results

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def run_prompted(
    model: AUSM, video: Video, seed: int = 0, clock: ModelClock | None = None
) -> np.ndarray:
    """Predicted masks (T, K, H, W) of each instance, prompted at its first visible frame;
    ``video`` at the model's input size."""
    visible = video.masks.any(axis=(2, 3))
    first = visible.argmax(axis=0)
    prompts = {}
    for t in sorted(set(first.tolist())):
        starting = [k for k in range(video.num_instances) if first[k] == t and visible[t, k]]
        if starting:
            prompts[t] = (torch.from_numpy(video.masks[t, starting]), starting)
    out = np.zeros_like(video.masks)
    clock = clock or ModelClock()
    results = clock.segment_clip(model, video.frames, model.init_state(seed=seed), prompts)
    for t, r in enumerate(results):
        for k, obj in enumerate(r.prompt_object_ids.tolist()):
            if obj >= 0:
                out[t, obj] = r.masks[k].numpy()
    return out


def run_unprompted(
    model: AUSM, video: Video, seed: int = 0, clock: ModelClock | None = None
) -> list[Track]:
    """The tracks the model finds unprompted; ``video`` at the model's input size."""
    t_len = video.num_frames
    masks: dict[int, np.ndarray] = {}
    scores: dict[int, list[float]] = {}
    labels: dict[int, Counter] = {}
    clock = clock or ModelClock()
    for t, r in enumerate(clock.segment_clip(model, video.frames, model.init_state(seed=seed))):
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
    """Run ``model`` on each video (frames resized to its input) in both modes and score the
    predictions at the annotations' resolution."""
    model = model.eval()
    clock = ModelClock()
    scores = []
    for video in tqdm(videos, desc="eval", unit="video", disable=not progress):
        small = resize_video(video, model.cfg.image_size)
        prompted = run_prompted(model, small, clock=clock)
        tracks = run_unprompted(model, small, clock=clock)
        scores.append(score_video(video, prompted, tracks))
    return pool_scores(scores, clock, model.cfg.image_size)


def pool_scores(
    scores: list[VideoScores], clock: ModelClock, model_size: tuple[int, int]
) -> EvalReport:
    """One report of many videos' scores: per-object figures averaged over all objects,
    per-pair figures pooled over all pairs, AP over all tracks."""
    frames = sum(s.frames for s in scores)
    windows: list[list[float]] = []
    failures: list[np.ndarray] = []  # per window: visible pairs, no mask, on another object
    for s in scores:
        for i, js in enumerate(s.windows):
            if i == len(windows):
                windows.append([])
            windows[i].extend(js)
        for i, counts in enumerate(s.failures):
            if i == len(failures):
                failures.append(np.zeros(3, dtype=np.int64))
            failures[i] += counts
    ap = ap_from_counts([c for s in scores for c in s.ap])
    coverage = sum((s.coverage for s in scores), Coverage())
    cases = sum(s.occlusions for s in scores)
    lost = [x for s in scores for x in s.lost]
    longest = max(scores, key=lambda s: s.frames) if scores else None
    return EvalReport(
        videos=len(scores),
        frames=frames,
        j=_mean(s.j for s in scores),
        f=_mean(s.f for s in scores),
        ap=ap["AP"],
        ap50=ap["AP50"],
        ap75=ap["AP75"],
        id_switches_per_100=100 * sum(s.id_switches for s in scores) / max(frames, 1),
        occlusions=cases,
        occlusions_kept_unprompted=(
            sum(s.kept_unprompted for s in scores) / cases if cases else float("nan")
        ),
        occlusions_kept_prompted=(
            sum(s.kept_prompted for s in scores) / cases if cases else float("nan")
        ),
        window_j=[float(np.mean(w)) for w in windows if w],
        lost_for_good=float(np.mean(lost)) if lost else float("nan"),
        window_no_mask=[float(f[1] / f[0]) for f in failures if f[0]],
        window_on_other=[float(f[2] / f[0]) for f in failures if f[0]],
        baseline_j=_mean(s.baseline_j for s in scores),
        baseline_f=_mean(s.baseline_f for s in scores),
        object_recall=coverage.recall,
        tracks_per_object=coverage.tracks_per_object,
        fps=clock.fps,
        threads=torch.get_num_threads(),
        scored_at=_sizes(scores, model_size),
        longest=f"{longest.name}, {longest.frames} frames" if scores else "",
        longest_window_j=[float(np.mean(w)) for w in longest.windows if w] if scores else [],
    )


def _last_over_first(window_j: list[float]) -> float:
    return window_j[-1] / window_j[0] if len(window_j) > 1 else float("nan")


def _mean(per_video: Iterable[np.ndarray]) -> float:
    values = np.concatenate([np.asarray(v, dtype=float) for v in per_video] or [np.zeros(0)])
    return float(values.mean()) if values.size else float("nan")


def _sizes(scores: list[VideoScores], model_size: tuple[int, int]) -> str:
    sizes = sorted({s.size for s in scores}, key=lambda s: (-s[0] * s[1], s))
    shown = ", ".join(f"{h}x{w}" for h, w in sizes[:3])
    more = f" +{len(sizes) - 3} more" if len(sizes) > 3 else ""
    return f"{shown}{more} (model input {model_size[0]}x{model_size[1]})"
