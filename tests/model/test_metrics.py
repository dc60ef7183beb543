"""Metrics against small hand-computed cases, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ausm_stream.model.evaluation.metrics import (
    Track,
    average_precision,
    boundary,
    boundary_tolerance,
    davis_object_scores,
    f_measure,
    id_switches,
    jaccard,
    occlusion_kept,
    st_iou,
)


def box(h, w, y0, x0, y1, x1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_jaccard_counts_empty_vs_empty_as_one():
    a, b = box(10, 10, 0, 0, 4, 4), box(10, 10, 2, 2, 6, 6)
    assert jaccard(a, b) == pytest.approx(4 / 28)
    empty = np.zeros((10, 10), dtype=bool)
    assert jaccard(empty, empty) == 1.0
    assert jaccard(a, empty) == 0.0 and jaccard(empty, a) == 0.0


def test_boundary_of_a_square_is_its_ring():
    b = boundary(box(8, 8, 2, 2, 6, 6))
    assert b.sum() == 12 and not b[3:5, 3:5].any()
    assert boundary(np.ones((3, 3), dtype=bool)).sum() == 0  # the image edge is no boundary


def test_f_measure_tolerance_and_edge_cases():
    assert boundary_tolerance((100, 100)) == math.ceil(0.008 * math.hypot(100, 100)) == 2
    gt = box(100, 100, 20, 20, 60, 60)
    assert f_measure(gt, gt) == 1.0
    assert f_measure(box(100, 100, 20, 22, 60, 62), gt) == 1.0  # 2 px shift: within tolerance
    # 3 px shift, 2 px tolerance: of the 156-pixel ring, top and bottom rows keep 39 of 40
    # pixels each, the near column keeps the 4 pixels within 2 px of the corners, the far
    # column none: precision = recall = 82 / 156.
    shifted = f_measure(box(100, 100, 20, 23, 60, 63), gt)
    assert shifted == pytest.approx(82 / 156)
    empty = np.zeros((100, 100), dtype=bool)
    assert f_measure(empty, empty) == 1.0
    assert f_measure(empty, gt) == 0.0 and f_measure(gt, empty) == 0.0


def test_davis_scores_skip_first_and_last_frame():
    gt = np.zeros((4, 1, 10, 10), dtype=bool)
    gt[:, 0] = box(10, 10, 2, 2, 6, 6)
    pred = gt.copy()
    pred[0, 0] = False  # a wrong first and last frame do not count
    pred[3, 0] = False
    pred[2, 0] = box(10, 10, 2, 2, 6, 4)  # half the object at frame 2
    j, f = davis_object_scores(pred, gt)
    assert j[0] == pytest.approx((1.0 + 0.5) / 2)
    assert 0.0 < f[0] < 1.0


def test_st_iou_sums_over_time_and_objects_absent_in_some_frames():
    a = np.zeros((3, 4, 4), dtype=bool)
    b = np.zeros((3, 4, 4), dtype=bool)
    a[0, :2, :2] = True  # 4 px; b absent at frame 0
    a[1, :2, :2] = b[1, :2, :2] = True  # 4 px overlap
    b[2, :, :] = True  # 16 px; a absent at frame 2
    assert st_iou(a, b) == pytest.approx(4 / (4 + 4 + 16))
    assert st_iou(np.zeros_like(a), np.zeros_like(b)) == 0.0


def _track(video, cat, score, masks, tid=-1):
    return Track(video, cat, np.asarray(masks, dtype=bool), score, tid)


def test_average_precision_hand_computed():
    full = np.ones((2, 4, 4), dtype=bool)
    half = full.copy()
    half[:, :, 2:] = False
    gts = [_track("v", 0, 1.0, full), _track("w", 0, 1.0, full)]
    # A perfect match and a 0.5-IoU match: all thresholds see one TP; only 0.5 sees two.
    preds = [_track("v", 0, 0.9, full), _track("w", 0, 0.8, half)]
    ap = average_precision(preds, gts)
    assert ap["AP50"] == pytest.approx(1.0)
    assert ap["AP75"] == pytest.approx(51 / 101)  # recall 0.5 reached, precision 1 up to it
    assert ap["AP"] == pytest.approx((1.0 + 9 * 51 / 101) / 10)
    # A higher-scored false positive first: precision runs 0, 1/2, 2/3 as recall reaches
    # 0, 1/2, 1; COCO's envelope lifts every recall point to 2/3.
    fp = _track("v", 0, 0.95, np.zeros((2, 4, 4), dtype=bool))
    assert average_precision([fp, *preds], gts)["AP50"] == pytest.approx(2 / 3)
    # No prediction at all, and the wrong category, score zero.
    assert average_precision([], gts)["AP"] == 0.0
    assert average_precision([_track("v", 1, 0.9, full)], gts)["AP"] == 0.0
    assert math.isnan(average_precision(preds, [])["AP"])


def test_id_switches_and_occlusion_keeping():
    t_len = 6
    gt_masks = np.zeros((t_len, 4, 4), dtype=bool)
    gt_masks[[0, 1, 4, 5], :2, :2] = True  # hidden at frames 2-3
    gt = _track("v", 0, 1.0, gt_masks, 0)
    same = _track("v", 0, 0.9, gt_masks, 7)
    assert id_switches([same], [gt]) == 0 and occlusion_kept([same], gt, 2, 3)
    before, after = gt_masks.copy(), gt_masks.copy()
    before[4:] = False
    after[:4] = False
    split = [_track("v", 0, 0.9, before, 7), _track("v", 0, 0.9, after, 8)]
    assert id_switches(split, [gt]) == 1 and not occlusion_kept(split, gt, 2, 3)
    # At the span's edges the object may be a sliver nobody matches: the nearest matched
    # frames within the window decide; none on one side means not kept.
    sliver = gt_masks.copy()
    sliver[[1, 4]] = False
    sliver[1, 0, 0] = sliver[4, 0, 0] = True
    gt_sliver = _track("v", 0, 1.0, sliver, 0)
    assert occlusion_kept([same], gt_sliver, 2, 3)
    assert not occlusion_kept(split, gt_sliver, 2, 3)
    assert not occlusion_kept([same], gt_sliver, 2, 3, window=1)
