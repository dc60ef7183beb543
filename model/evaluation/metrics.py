"""Segmentation and tracking metrics, following the public benchmarks' conventions.

- **J** (region similarity): mask IoU; a frame where both prediction and ground truth are
  empty scores 1 (DAVIS 2017).
- **F** (contour accuracy): boundary F-measure as davis2017-evaluation computes it
  (``davis2017/metrics.py``: ``f_measure``, ``_seg2bmap``). A pixel is on the boundary when
  it differs from its east, south or south-east neighbour (last row: east only; last
  column: south only; the bottom-right pixel never), so the map runs half a pixel towards
  the origin and holds background pixels too. Boundaries are matched within a disk of
  radius ``ceil(0.008 x image diagonal)`` pixels (``bound_th`` itself when >= 1), the
  points ``x^2 + y^2 <= r^2`` of ``arange(-r, r + 1)``. An empty boundary counts as
  precision 1 (prediction) or recall 1 (ground truth), so both empty scores 1 and one
  empty 0; F = 2PR / (P + R), 0 when P + R = 0.
- **AP** (YouTube-VIS): COCO-style average precision over tracks, with the spatio-temporal
  IoU ``sum_t |P_t n G_t| / sum_t |P_t u G_t|``, IoU thresholds 0.50:0.05:0.95, 101 recall
  points, at most 100 tracks per video, averaged over categories that have ground truth.
- **Long streams**: mean J over the visible (frame, object) pairs of each window of 24
  frames, and the share of prompted objects *lost for good* (no mask on any of their last
  24 visible frames).
- **ID switches**: per ground-truth instance, the predicted track matched at each frame
  (IoU >= 0.5, best IoU) changes from one matched frame to the next.
- **Object recall** and **tracks per object** (:class:`Coverage`): unprompted figures that
  stay fair when annotations are not exhaustive, as in DAVIS. Recall is the share of
  visible annotated (object, frame) pairs that some track covers (mask IoU >= 0.5); tracks
  per object counts the distinct track ids covering an object on at least one frame,
  averaged over the objects covered at all. Tracks on unannotated objects count nowhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from scipy import ndimage

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = np.logical_and(pred, gt).sum()
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(inter / union)


def boundary(mask: np.ndarray) -> np.ndarray:
    """The DAVIS boundary map (``_seg2bmap``): pixels that differ from a neighbour.

    The official map marks a pixel, foreground or background, that differs from its east,
    south or south-east neighbour; in the last row only the east one is compared, in the
    last column only the south one, and the bottom-right pixel is never marked. The map is
    one pixel wide and lies half a pixel towards the origin: a lone pixel's boundary is the
    2x2 block ending at it. Pixels outside the image do not count (the image's edge is no
    boundary). The official f_measure never resizes the map, so neither do we.
    """
    m = mask.astype(bool)
    b = np.zeros_like(m)
    core = m[:-1, :-1]
    b[:-1, :-1] = (core != m[:-1, 1:]) | (core != m[1:, :-1]) | (core != m[1:, 1:])
    b[-1, :-1] = m[-1, :-1] != m[-1, 1:]
    b[:-1, -1] = m[:-1, -1] != m[1:, -1]
    return b


def _disk(radius: float) -> np.ndarray:
    """skimage's ``disk(radius)``, which the official code dilates with.

    The grid is ``arange(-radius, radius + 1)`` on both axes and a point belongs when
    ``x^2 + y^2 <= radius^2``; for a fractional radius the grid does not hold 0 and the
    kernel can have an even size.
    """
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def boundary_tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> float:
    """The disk radius in pixels: ``bound_th`` itself when >= 1 (official convention), else
    ``ceil(bound_th x image diagonal)``."""
    return bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*shape))


def _dilate(bmap: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``cv2.dilate`` of a binary map: ``out[p] = any(bmap[p + k - anchor])`` over the
    kernel's points ``k``, anchor ``size // 2``, nothing from outside the image.

    scipy's dilation mirrors the kernel, so it is handed the mirrored one; an even-sized
    kernel (a fractional radius) then sits one pixel past cv2's anchor, which an origin of
    -1 on that axis puts back.
    """
    origin = [-1 if n % 2 == 0 else 0 for n in kernel.shape]
    return ndimage.binary_dilation(bmap, kernel[::-1, ::-1], origin=origin)


def f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """Boundary F-measure of ``pred`` against ``gt``, davis2017-evaluation's ``f_measure``.

    A predicted boundary pixel is correct when a ground-truth boundary pixel lies within
    the tolerance disk, and the other way round for recall. An empty predicted boundary
    has precision 1 and an empty ground-truth boundary recall 1 (official convention):
    both empty score 1, one empty 0. A mask that fills the image has an empty boundary too.
    """
    bp, bg = boundary(pred), boundary(gt)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 or n_g == 0:
        return 1.0 if n_p == n_g else 0.0
    disk = _disk(boundary_tolerance(pred.shape, bound_th))
    precision = (bp & _dilate(bg, disk)).sum() / n_p
    recall = (bg & _dilate(bp, disk)).sum() / n_g
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def davis_object_scores(
    pred: np.ndarray,
    gt: np.ndarray,
    skip_ends: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-object mean J and F over frames; pred and gt are (T, K, H, W) bool.

    DAVIS 2017 leaves out the first frame (it holds the prompt) and the last one.
    """
    t_len, k_len = gt.shape[:2]
    frames = range(1, t_len - 1) if skip_ends and t_len > 2 else range(t_len)
    j = np.array([[jaccard(pred[t, k], gt[t, k]) for t in frames] for k in range(k_len)])
    f = np.array([[f_measure(pred[t, k], gt[t, k]) for t in frames] for k in range(k_len)])
    return j.mean(axis=1) if k_len else j, f.mean(axis=1) if k_len else f


def windowed_j(pred: np.ndarray, gt: np.ndarray, window: int = 24) -> list[list[float]]:
    """J of every (frame, object) where the object is visible, grouped by window of frames
    (``t // window``): how quality holds over a long stream. pred and gt are (T, K, H, W)."""
    t_len, k_len = gt.shape[:2]
    out: list[list[float]] = [[] for _ in range((t_len + window - 1) // window)]
    visible = gt.reshape(t_len, k_len, -1).any(axis=2)
    for t, k in zip(*np.nonzero(visible), strict=True):
        out[t // window].append(jaccard(pred[t, k], gt[t, k]))
    return out


def window_failures(
    pred: np.ndarray, gt: np.ndarray, window: int = 24, other_iou: float = 0.3
) -> list[tuple[int, int, int]]:
    """Per window of frames: (visible (frame, object) pairs, those with no predicted mask,
    those whose mask lies on another object: IoU >= ``other_iou`` with another visible
    object, more than with its own). Where a long stream's J goes: objects lost, or tracks
    that moved onto another object. pred and gt are (T, K, H, W)."""
    t_len, k_len = gt.shape[:2]
    out = [[0, 0, 0] for _ in range((t_len + window - 1) // window)]
    visible = gt.reshape(t_len, k_len, -1).any(axis=2)
    for t, k in zip(*np.nonzero(visible), strict=True):
        counts = out[t // window]
        counts[0] += 1
        if not pred[t, k].any():
            counts[1] += 1
            continue
        ious = [jaccard(pred[t, k], gt[t, o]) if visible[t, o] else 0.0 for o in range(k_len)]
        best = int(np.argmax(ious))
        if best != k and ious[best] >= other_iou:
            counts[2] += 1
    return [(n, empty, other) for n, empty, other in out]


def lost_for_good(pred: np.ndarray, gt: np.ndarray, tail: int = 24) -> list[bool]:
    """Per object: no predicted mask on any of its last ``tail`` visible frames (an object
    visible on fewer frames than that is never counted as lost)."""
    t_len, k_len = gt.shape[:2]
    visible = gt.reshape(t_len, k_len, -1).any(axis=2)
    found = pred.reshape(t_len, k_len, -1).any(axis=2)
    lost = []
    for k in range(k_len):
        frames = np.nonzero(visible[:, k])[0]
        lost.append(len(frames) >= tail and not found[frames[-tail:], k].any())
    return lost


@dataclass
class Track:
    """A predicted (or ground-truth) instance over a whole video."""

    video: str
    category: int
    masks: np.ndarray  # (T, H, W) bool
    score: float = 1.0
    track_id: int = -1


def st_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return 0.0 if union == 0 else float(inter / union)


def _match(dts: list[Track], gts: list[Track], threshold: float, ious: np.ndarray) -> np.ndarray:
    """Greedy COCO matching of score-sorted detections; returns a matched flag per detection."""
    taken = np.zeros(len(gts), dtype=bool)
    matched = np.zeros(len(dts), dtype=bool)
    for d in range(len(dts)):
        best, best_iou = -1, threshold
        for g in range(len(gts)):
            if not taken[g] and ious[d, g] >= best_iou:
                best, best_iou = g, ious[d, g]
        if best >= 0:
            taken[best] = True
            matched[d] = True
    return matched


@dataclass
class APCounts:
    """What AP needs of one video and one category: its number of ground-truth instances
    and its detections (score-sorted, at most ``max_dets``) with their scores and whether
    each matched at each IoU threshold. Small, so a long evaluation keeps these per video
    instead of every track's masks."""

    video: str
    category: int
    n_gt: int
    scores: np.ndarray  # (D,) float
    matched: np.ndarray  # (len(IOU_THRESHOLDS), D) bool


def ap_counts(preds: list[Track], gts: list[Track], max_dets: int = 100) -> list[APCounts]:
    """Per (video, category) present in ``preds`` or ``gts``, the counts AP is made of."""
    videos = sorted({t.video for t in preds} | {g.video for g in gts})
    categories = sorted({t.category for t in preds} | {g.category for g in gts})
    out = []
    for video in videos:
        for cat in categories:
            g_v = [g for g in gts if g.video == video and g.category == cat]
            d_v = sorted(
                (d for d in preds if d.video == video and d.category == cat), key=lambda d: -d.score
            )[:max_dets]
            if not g_v and not d_v:
                continue
            ious = np.array([[st_iou(d.masks, g.masks) for g in g_v] for d in d_v]).reshape(
                len(d_v), len(g_v)
            )
            matched = np.zeros((len(IOU_THRESHOLDS), len(d_v)), dtype=bool)
            for i, th in enumerate(IOU_THRESHOLDS):
                matched[i] = _match(d_v, g_v, th, ious)
            scores = np.array([d.score for d in d_v], dtype=float)
            out.append(APCounts(video, cat, len(g_v), scores, matched))
    return out


def ap_from_counts(counts: list[APCounts]) -> dict[str, float]:
    """YouTube-VIS AP, AP50 and AP75 of the counts of any number of videos (NaN when there
    is no ground truth at all); detections of a category no video has are left out."""
    categories = sorted({c.category for c in counts if c.n_gt})
    if not categories:
        return {"AP": float("nan"), "AP50": float("nan"), "AP75": float("nan")}
    precision = np.zeros((len(IOU_THRESHOLDS), len(categories)))
    for c_i, cat in enumerate(categories):
        mine = sorted((c for c in counts if c.category == cat), key=lambda c: c.video)
        scores = np.concatenate([c.scores for c in mine])
        matched = np.concatenate([c.matched for c in mine], axis=1)
        order = np.argsort(-scores, kind="mergesort")
        n_gt = sum(c.n_gt for c in mine)
        for i in range(len(IOU_THRESHOLDS)):
            precision[i, c_i] = _interpolated_precision(matched[i][order], n_gt)
    return {
        "AP": float(precision.mean()),
        "AP50": float(precision[0].mean()),
        "AP75": float(precision[5].mean()),
    }


def average_precision(
    preds: list[Track], gts: list[Track], max_dets: int = 100
) -> dict[str, float]:
    """YouTube-VIS AP, AP50 and AP75 (NaN when there is no ground truth at all)."""
    return ap_from_counts(ap_counts(preds, gts, max_dets))


def _interpolated_precision(tp: np.ndarray, n_gt: int) -> float:
    """Mean precision at the 101 recall points (COCO's interpolation)."""
    if n_gt == 0 or tp.size == 0:
        return 0.0
    tps = np.cumsum(tp)
    fps = np.cumsum(~tp)
    recall = tps / n_gt
    prec = tps / (tps + fps)
    prec = np.maximum.accumulate(prec[::-1])[::-1]  # precision envelope
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.where(idx < len(prec), prec[np.minimum(idx, len(prec) - 1)], 0.0).mean())


def frame_matches(preds: list[Track], gt: Track, iou: float = 0.5) -> list[int | None]:
    """Per frame, the track id of the prediction best overlapping ``gt`` (IoU >= ``iou``)."""
    out: list[int | None] = []
    for t in range(gt.masks.shape[0]):
        best, best_iou = None, iou
        if gt.masks[t].any():
            for p in preds:
                v = jaccard(p.masks[t], gt.masks[t]) if p.masks[t].any() else 0.0
                if v >= best_iou:
                    best, best_iou = p.track_id, v
        out.append(best)
    return out


def id_switches(preds: list[Track], gts: list[Track]) -> int:
    switches = 0
    for g in gts:
        seen = [
            m for m in frame_matches([p for p in preds if p.video == g.video], g) if m is not None
        ]
        switches += sum(1 for a, b in pairwise(seen) if a != b)
    return switches


def occlusion_kept(preds: list[Track], gt: Track, first: int, last: int, window: int = 3) -> bool:
    """Does the same track hold the object before and after its hidden span (frames
    ``first``..``last``)?

    "Before" is the last frame of the ``window`` frames before the span where a track matches
    the object, "after" the first such frame of the ``window`` frames after it: right at the
    span's edges the object is often a sliver of a few pixels, and whether a mask overlaps a
    sliver by IoU 0.5 says nothing about identity. No match on a side counts as not kept.
    """
    matches = frame_matches([p for p in preds if p.video == gt.video], gt)
    before = [m for m in matches[max(0, first - window) : first] if m is not None]
    after = [m for m in matches[last + 1 : last + 1 + window] if m is not None]
    return bool(before) and bool(after) and before[-1] == after[0]


def covering_tracks(preds: list[Track], gt: Track, iou: float = 0.5) -> list[set[int]]:
    """Per frame, the ids of the tracks whose mask has IoU >= ``iou`` with ``gt``'s (every
    such track, not only the best; none where ``gt`` is hidden)."""
    out: list[set[int]] = []
    for t in range(gt.masks.shape[0]):
        ids = set()
        if gt.masks[t].any():
            for p in preds:
                if p.masks[t].any() and jaccard(p.masks[t], gt.masks[t]) >= iou:
                    ids.add(p.track_id)
        out.append(ids)
    return out


@dataclass
class Coverage:
    """How unprompted tracks cover the annotated objects, counted so that real objects
    nobody annotated (DAVIS annotates only the main ones) cost nothing: only annotated
    objects are looked at, never the tracks that match none.

    - ``recall``: the share of visible annotated (object, frame) pairs on which some track's
      mask has IoU >= 0.5 with the object's, pooled over all pairs of all videos.
    - ``tracks_per_object``: per annotated object, the number of distinct track ids that
      cover it (IoU >= 0.5) on at least one frame, averaged over the objects covered on
      some frame (1 is ideal; more means the object's identity broke or tracks doubled).
    """

    visible: int = 0
    covered: int = 0
    tracks: list[int] = field(default_factory=list)
    """Per annotated object, its number of distinct covering tracks (0: never covered)."""

    def __add__(self, other: Coverage) -> Coverage:
        return Coverage(
            self.visible + other.visible, self.covered + other.covered, self.tracks + other.tracks
        )

    @property
    def recall(self) -> float:
        return self.covered / self.visible if self.visible else float("nan")

    @property
    def tracks_per_object(self) -> float:
        found = [n for n in self.tracks if n > 0]
        return float(np.mean(found)) if found else float("nan")


def object_coverage(preds: list[Track], gts: list[Track], iou: float = 0.5) -> Coverage:
    """The :class:`Coverage` of ``gts`` by ``preds`` (tracks of other videos are ignored)."""
    out = Coverage()
    for g in gts:
        per_frame = covering_tracks([p for p in preds if p.video == g.video], g, iou)
        out.visible += int(g.masks.reshape(len(per_frame), -1).any(axis=1).sum())
        out.covered += sum(1 for ids in per_frame if ids)
        out.tracks.append(len(set().union(*per_frame)))
    return out
