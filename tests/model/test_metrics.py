"""Metrics against small hand-computed cases, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ausm_stream.model.evaluation.metrics import (
    Track,
    _dilate,
    _disk,
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


def grid(rows: str) -> np.ndarray:
    """A bool map from rows of '#' (set) and '.' (unset)."""
    return np.array([[c == "#" for c in row] for row in rows.split()])


# The F cases below are worked out by hand from davis2017-evaluation's definitions
# (davis2017/metrics.py: f_measure, _seg2bmap; skimage's disk; cv2.dilate).


def test_boundary_map_follows_seg2bmap():
    # A pixel is marked when it differs from its east, south or south-east neighbour: a
    # square's map is the ring of the square grown by one pixel up and left, background
    # pixels included, and 12 pixels for a 3x3 square (the old foreground ring had 8).
    square = box(6, 6, 1, 1, 4, 4)
    ring = grid("####.. #..#.. #..#.. ####.. ...... ......")
    assert (boundary(square) == ring).all()
    assert boundary(box(8, 8, 2, 2, 6, 6)).sum() == 16  # a 4x4 square: the 5x5 ring
    # Touching the last row and column: there only the east (last row) or the south (last
    # column) neighbour is compared and the corner is never marked, so none of the mask's
    # own pixels is on its map.
    corner = box(6, 6, 3, 3, 6, 6)
    assert (boundary(corner) == grid("...... ...... ..#### ..#... ..#... ..#...")).all()
    assert (boundary(box(4, 4, 3, 0, 4, 4)) == grid(".... .... #### ....")).all()
    # A single pixel: the 2x2 block ending at it; at the bottom-right corner the pixel
    # itself drops out; at the top-left one nothing lies above or left of it.
    assert (boundary(box(5, 5, 2, 2, 3, 3)) == grid("..... .##.. .##.. ..... .....")).all()
    assert (boundary(box(5, 5, 4, 4, 5, 5)) == grid("..... ..... ..... ...## ...#.")).all()
    assert (boundary(box(5, 5, 0, 0, 1, 1)) == grid("#.... ..... ..... ..... .....")).all()
    # A constant map has no boundary: the image's edge is none.
    assert not boundary(np.ones((3, 3), dtype=bool)).any()
    assert not boundary(np.zeros((3, 3), dtype=bool)).any()


def test_tolerance_disk_follows_skimage_disk():
    # ceil(0.008 x diagonal): 1 px at 6x6 (0.068) and 10x10, 2 px at 100x100 (1.13).
    assert boundary_tolerance((6, 6)) == 1 and boundary_tolerance((10, 10)) == 1
    assert boundary_tolerance((100, 100)) == math.ceil(0.008 * math.hypot(100, 100)) == 2
    # bound_th >= 1 is the radius in pixels itself, not a fraction of the diagonal.
    assert boundary_tolerance((6, 6), 2) == 2 and boundary_tolerance((6, 6), 1.5) == 1.5
    # skimage: the points x^2 + y^2 <= r^2 of the grid arange(-r, r + 1).
    assert (_disk(1) == grid(".#. ### .#.")).all()
    assert (_disk(2) == grid("..#.. .###. ##### .###. ..#..")).all()
    # r = 1.5: the grid is -1.5, -0.5, 0.5, 1.5, so the kernel is 4x4 holding the inner 2x2.
    assert (_disk(1.5) == grid(".... .##. .##. ....")).all()


def test_dilation_anchors_the_kernel_like_cv2():
    # cv2.dilate: out[p] = any(src[p + k - anchor]) with anchor size // 2. The 4x4 disk of
    # radius 1.5 (points k in {1, 2}^2, anchor 2) spreads a pixel to itself and the pixels
    # below and right of it, not up and left.
    src = box(5, 5, 2, 2, 3, 3)
    assert (_dilate(src, _disk(1.5)) == box(5, 5, 2, 2, 4, 4)).all()
    assert (_dilate(src, _disk(1)) == grid("..... ..#.. .###. ..#.. .....")).all()


def test_f_measure_one_pixel_shifts_within_and_beyond_tolerance():
    # 10x10, tolerance 1 px (the cross _disk(1)); the 3x3 square's map is the 12-pixel ring
    # of rows 1-4, columns 1-4.
    gt = box(10, 10, 2, 2, 5, 5)
    assert f_measure(gt, gt) == 1.0
    assert f_measure(box(10, 10, 2, 3, 5, 6), gt) == 1.0  # 1 px right: every pixel matched
    # 1 px down-right: each ring misses only its far corner (2 px away on the cross):
    # precision = recall = 11/12 (the old 8-pixel rings gave 7/8).
    assert f_measure(box(10, 10, 3, 3, 6, 6), gt) == pytest.approx(11 / 12)
    # 2 px right, beyond tolerance: the top and bottom rows keep 3 of 4 pixels, the near
    # column its 2 pixels, the far one none: 8/12 (the old rings gave 5/8).
    assert f_measure(box(10, 10, 2, 4, 5, 7), gt) == pytest.approx(8 / 12)
    # bound_th 1.5 is a radius of 1.5 px: the 2x2 kernel covers the down-right shift one
    # way only: precision 1, recall 4/12 (the right column's top two, the bottom row's
    # left two), F = 1/2.
    assert f_measure(box(10, 10, 3, 3, 6, 6), gt, bound_th=1.5) == pytest.approx(0.5)


def test_f_measure_tolerance_and_edge_cases():
    gt = box(100, 100, 20, 20, 60, 60)
    assert f_measure(box(100, 100, 20, 22, 60, 62), gt) == 1.0  # 2 px shift: within tolerance
    # 3 px shift, 2 px tolerance: of the 160-pixel ring (rows and columns 19-59), the top and
    # bottom rows keep 40 of 41 pixels each, the near column the 4 pixels within 2 px of the
    # corners, the far column none: precision = recall = 84 / 160.
    shifted = f_measure(box(100, 100, 20, 23, 60, 63), gt)
    assert shifted == pytest.approx(84 / 160)
    # Official edge cases: an empty predicted boundary is precision 1, an empty ground-truth
    # one recall 1: both empty score 1, one empty 0. A full mask has no boundary either.
    empty = np.zeros((100, 100), dtype=bool)
    full = np.ones((100, 100), dtype=bool)
    assert f_measure(empty, empty) == 1.0 and f_measure(full, empty) == 1.0
    assert f_measure(empty, gt) == 0.0 and f_measure(gt, empty) == 0.0
    assert f_measure(full, gt) == 0.0
    # A lone pixel in the bottom-right corner still has a boundary (3 pixels).
    assert f_measure(box(100, 100, 99, 99, 100, 100), empty) == 0.0


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


def test_windowed_j_and_objects_lost_for_good():
    from ausm_stream.model.evaluation.metrics import lost_for_good, windowed_j

    gt = np.zeros((6, 2, 4, 4), dtype=bool)
    gt[:, 0, :2, :2] = True  # object 0 visible throughout
    gt[:3, 1, 2:, 2:] = True  # object 1 leaves after frame 2
    pred = gt.copy()
    pred[3:, 0] = False  # object 0 lost from frame 3 on
    pred[1, 1, 3, 3] = False  # a quarter of object 1 missed once
    assert windowed_j(pred, gt, window=3) == [[1.0, 1.0, 1.0, 0.75, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert lost_for_good(pred, gt, tail=3) == [True, False]
    assert lost_for_good(pred, gt, tail=4) == [False, False]  # object 0 was found on frame 2
    pred[:, 1] = False
    assert lost_for_good(pred, gt, tail=3) == [True, True]
    assert lost_for_good(pred, gt, tail=4) == [False, False]  # object 1: too few visible frames


def test_window_failures_count_lost_objects_and_tracks_on_other_objects():
    from ausm_stream.model.evaluation.metrics import window_failures

    gt = np.zeros((4, 2, 4, 4), dtype=bool)
    gt[:, 0, :2, :2] = True
    gt[:, 1, 2:, 2:] = True
    pred = gt.copy()
    pred[2, 0] = False  # object 0 has no mask at frame 2
    pred[3, 0] = gt[3, 1]  # at frame 3 its mask is object 1's
    pred[3, 1, 2:, 3] = False  # object 1 half found: on its own object still
    assert window_failures(pred, gt, window=2) == [(4, 0, 0), (4, 1, 1)]
    pred[3, 0] = gt[3, 1] & False  # empty, not on another object
    assert window_failures(pred, gt, window=2) == [(4, 0, 0), (4, 2, 0)]


def test_ap_pools_per_video_counts_like_all_tracks_at_once():
    from ausm_stream.model.evaluation.metrics import ap_counts, ap_from_counts

    full = np.ones((2, 4, 4), dtype=bool)
    half = full.copy()
    half[:, :, 2:] = False
    gts = [_track("v", 0, 1.0, full), _track("w", 0, 1.0, full), _track("w", 1, 1.0, half)]
    preds = [
        _track("v", 0, 0.9, full),
        _track("w", 0, 0.8, half),
        _track("w", 0, 0.95, np.zeros((2, 4, 4), dtype=bool)),
        _track("v", 1, 0.7, half),  # a class-1 false positive in a video without class 1
        _track("v", 2, 0.7, half),  # a class nobody annotated: left out
    ]
    by_video = [
        c
        for video in ("w", "v")  # any order: the counts are pooled in video-name order
        for c in ap_counts(
            [p for p in preds if p.video == video], [g for g in gts if g.video == video]
        )
    ]
    assert ap_from_counts(by_video) == average_precision(preds, gts)
    # Class 0 as in test_average_precision_hand_computed (AP50 2/3); class 1: the
    # false positive at 0.7 comes before nothing, so precision 0 throughout.
    assert average_precision(preds, gts)["AP50"] == pytest.approx((2 / 3 + 0) / 2)


def coverage_case():
    """Video v: object A (top-left 2x2) on frames 0-3, object B (bottom-right 2x2) on frames
    0-1. Tracks: 7 is A on frames 0-1; 11 is A plus two pixels on frame 1 (IoU 4/6); 8 holds
    3 of A's 4 pixels on frame 2 (IoU 3/4) and 2 of 4 on frame 3 (IoU 1/2, the threshold
    counts); 10 touches B with one pixel on frame 0 (IoU 1/4); 9 sits on an object nobody
    annotated (top-right) throughout."""
    a = np.zeros((4, 4, 4), dtype=bool)
    a[:, :2, :2] = True
    b = np.zeros((4, 4, 4), dtype=bool)
    b[:2, 2:, 2:] = True
    gts = [_track("v", 0, 1.0, a, 0), _track("v", 0, 1.0, b, 1)]
    t7 = np.zeros_like(a)
    t7[:2] = a[:2]
    t11 = np.zeros_like(a)
    t11[1] = a[1]
    t11[1, 2, :2] = True
    t8 = np.zeros_like(a)
    t8[2, :2, :2] = True
    t8[2, 1, 1] = False
    t8[3, 0, :2] = True
    t10 = np.zeros_like(a)
    t10[0, 3, 3] = True
    t9 = np.zeros_like(a)
    t9[:, :2, 2:] = True
    tracks = [
        _track("v", 0, 0.9, t7, 7),
        _track("v", 0, 0.8, t11, 11),
        _track("v", 0, 0.8, t8, 8),
        _track("v", 0, 0.7, t10, 10),
    ]
    return gts, tracks, _track("v", 0, 0.95, t9, 9)


def test_object_recall_and_tracks_per_object_hand_computed():
    from ausm_stream.model.evaluation.metrics import covering_tracks, object_coverage

    gts, tracks, unannotated = coverage_case()
    assert covering_tracks(tracks, gts[0]) == [{7}, {7, 11}, {8}, {8}]
    assert covering_tracks(tracks, gts[1]) == [set(), set(), set(), set()]  # hidden on 2-3
    cov = object_coverage(tracks, gts)
    # Visible pairs: A 4 + B 2; covered: A's 4. A is covered by 7, 11 and 8; B by none and
    # so left out of the average.
    assert (cov.visible, cov.covered, cov.tracks) == (6, 4, [3, 0])
    assert cov.recall == pytest.approx(4 / 6)
    assert cov.tracks_per_object == 3.0
    # A real object nobody annotated, found by a high-scored track, costs recall nothing
    # (AP takes it as a false positive).
    with_extra = object_coverage([unannotated, *tracks], gts)
    assert (with_extra.visible, with_extra.covered, with_extra.tracks) == (6, 4, [3, 0])
    assert (
        average_precision([unannotated, *tracks], gts)["AP50"]
        < average_precision(tracks, gts)["AP50"]
    )


def test_coverage_pools_over_videos_and_ignores_other_videos_tracks():
    from ausm_stream.model.evaluation.metrics import Coverage, object_coverage

    gts, tracks, _ = coverage_case()
    c = np.zeros((2, 4, 4), dtype=bool)
    c[:, 2:, :2] = True  # object C of video w, on both frames
    found = c.copy()
    found[1] = False
    gt_w = [_track("w", 0, 1.0, c, 0)]
    w_tracks = [_track("w", 0, 0.9, found, 7)]  # same id as in v: another video's track
    assert object_coverage(tracks, gt_w).covered == 0  # v's tracks never cover w's objects
    total = object_coverage(tracks, gts) + object_coverage(w_tracks, gt_w)
    assert (total.visible, total.covered, total.tracks) == (8, 5, [3, 0, 1])
    assert total.recall == pytest.approx(5 / 8)
    assert total.tracks_per_object == pytest.approx((3 + 1) / 2)
    empty = Coverage()
    assert math.isnan(empty.recall) and math.isnan(empty.tracks_per_object)
