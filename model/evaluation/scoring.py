"""Score one video's predictions against its annotations, at the annotations' resolution.

The model sees frames resized to its input size (``cfg.image_size``), so its masks come
out at that size. Like the official DAVIS code, which scores a submission against the
annotation PNGs as they are, every figure here is computed at the annotation's resolution:
predicted masks are first upsampled to it (nearest neighbour, pixel centres aligned, as
PIL's ``NEAREST``: what a low-resolution method must do to submit to DAVIS). Nearest on the
masks rather than bilinear on the logits, because the masks the model emits are the
tracker's (connected parts, overlaps resolved, twins merged), which the raw logits do not
reproduce. Scored at the model's own size instead, a DAVIS video would be judged against
masks shrunk to that size, where thin parts are gone and the blocks of a low-resolution
mask cost nothing: not the figure DAVIS publishes.

When the sizes already match (synthetic videos made at the model's size), nothing is
resized and the figures are those computed at that size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ausm_stream.model.data.video import Video
from ausm_stream.model.evaluation.metrics import (
    APCounts,
    Coverage,
    Track,
    ap_counts,
    davis_object_scores,
    id_switches,
    lost_for_good,
    object_coverage,
    occlusion_kept,
    window_failures,
    windowed_j,
)

WINDOW = 24
"""Frames per window of the long-stream figures (3 s at 8 frames a second)."""


def upsample_nearest(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Masks (..., h, w) -> (..., H, W) by nearest neighbour with pixel centres aligned:
    output pixel ``y`` takes input row ``floor((y + 0.5) * h / H)`` (PIL's ``NEAREST``).
    A no-op at the right size."""
    h, w = masks.shape[-2:]
    big_h, big_w = size
    if (h, w) == (big_h, big_w):
        return masks
    rows = ((np.arange(big_h) + 0.5) * h / big_h).astype(np.int64)
    cols = ((np.arange(big_w) + 0.5) * w / big_w).astype(np.int64)
    return masks[..., rows[:, None], cols[None, :]]


def score_at_annotation(pred: np.ndarray, video: Video) -> tuple[np.ndarray, np.ndarray]:
    """Per-object J and F (DAVIS 2017, first and last frame left out) of prompted masks
    ``pred`` (T, K, h, w) at any size, upsampled to the annotation's and scored there."""
    return davis_object_scores(upsample_nearest(pred, video.size), video.masks)


def copy_first_mask(gt: np.ndarray) -> np.ndarray:
    """The copy-first-mask baseline's prediction for ground truth ``gt`` (T, K, H, W): each
    object's mask on the first frame where it is visible, on that frame and every later
    one; nothing before. What a tracker that never moves would score."""
    out = np.zeros_like(gt)
    visible = gt.reshape(*gt.shape[:2], -1).any(axis=2)
    for k in range(gt.shape[1]):
        if visible[:, k].any():
            first = int(visible[:, k].argmax())
            out[first:, k] = gt[first, k]
    return out


@dataclass
class VideoScores:
    """Every figure's raw material from one video, all at the annotation's resolution; the
    runner pools these over videos."""

    name: str
    frames: int
    size: tuple[int, int]
    j: np.ndarray  # (K,) prompted, per object
    f: np.ndarray
    baseline_j: np.ndarray  # (K,) copy-first-mask baseline, per object
    baseline_f: np.ndarray
    windows: list[list[float]]  # prompted J of visible pairs, per window of WINDOW frames
    lost: list[bool]  # per prompted object: lost for good
    failures: list[tuple[int, int, int]]  # per window: visible, without a mask, on another
    ap: list[APCounts]
    id_switches: int
    coverage: Coverage = field(default_factory=Coverage)
    occlusions: int = 0
    kept_unprompted: int = 0
    kept_prompted: int = 0


def score_video(video: Video, prompted: np.ndarray, tracks: list[Track]) -> VideoScores:
    """Score a video's prompted masks (T, K, h, w) and unprompted tracks (masks (T, h, w)),
    both at any one size, against ``video``'s annotations at their own size."""
    gt = video.masks
    prompted = upsample_nearest(prompted, video.size)
    tracks = [
        Track(t.video, t.category, upsample_nearest(t.masks, video.size), t.score, t.track_id)
        for t in tracks
    ]
    j, f = davis_object_scores(prompted, gt)
    base_j, base_f = davis_object_scores(copy_first_mask(gt), gt)
    gts = [
        Track(video.name, int(video.classes[k]), gt[:, k], track_id=k)
        for k in range(video.num_instances)
    ]
    kept_u = kept_p = 0
    for k, first, last in video.occlusions:
        kept_u += occlusion_kept(tracks, gts[k], first, last)
        obj = [Track(video.name, 0, prompted[:, k], track_id=k)]
        kept_p += occlusion_kept(obj, gts[k], first, last)
    return VideoScores(
        name=video.name,
        frames=video.num_frames,
        size=video.size,
        j=j,
        f=f,
        baseline_j=base_j,
        baseline_f=base_f,
        windows=windowed_j(prompted, gt, WINDOW),
        lost=lost_for_good(prompted, gt, WINDOW),
        failures=window_failures(prompted, gt, WINDOW),
        ap=ap_counts(tracks, gts),
        id_switches=id_switches(tracks, gts),
        coverage=object_coverage(tracks, gts),
        occlusions=len(video.occlusions),
        kept_unprompted=kept_u,
        kept_prompted=kept_p,
    )
