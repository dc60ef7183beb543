"""Scoring at the annotation's resolution, the copy-first-mask baseline, and the report."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from ausm_stream.model.data.formats import resize_video
from ausm_stream.model.data.video import Video
from ausm_stream.model.evaluation.metrics import Track, davis_object_scores
from ausm_stream.model.evaluation.scoring import (
    copy_first_mask,
    score_at_annotation,
    score_video,
    upsample_nearest,
)


def square_video() -> Video:
    """4x4, 3 frames: one still object, the 3x3 square of rows and columns 0-2 (9 px)."""
    masks = np.zeros((3, 1, 4, 4), dtype=bool)
    masks[:, 0, :3, :3] = True
    return Video("sq", np.zeros((3, 4, 4, 3), np.uint8), masks, np.zeros(1, np.int64), ("o",))


def test_upsample_nearest_aligns_pixel_centres_like_pil():
    m = np.array([[1, 0], [0, 0]], dtype=bool)
    assert (upsample_nearest(m, (4, 4)) == np.kron(m, np.ones((2, 2), dtype=bool))).all()
    # 2 -> 3: output x takes input floor((x + 0.5) * 2 / 3) = 0, 1, 1
    assert upsample_nearest(np.array([[True, False]]), (1, 3)).tolist() == [[True, False, False]]
    rng = np.random.default_rng(0)
    small = rng.random((2, 5, 7)) > 0.5
    for size in [(11, 13), (5, 20), (9, 7)]:
        pil = [np.asarray(Image.fromarray(s).resize(size[::-1], Image.NEAREST)) for s in small]
        assert (upsample_nearest(small, size) == np.stack(pil)).all()
    assert upsample_nearest(small, (5, 7)) is small


def test_a_mask_perfect_at_model_size_scores_four_ninths_at_annotation_size():
    video = square_video()
    small = resize_video(video, (2, 2))
    # At 2x2, nearest takes pixels (1, 1), (1, 3), (3, 1), (3, 3): only (1, 1) is in the
    # square, so the object shrinks to the top-left pixel.
    assert small.masks[1, 0].tolist() == [[True, False], [False, False]]
    pred = small.masks.copy()  # the model reproduces that exactly
    j_model, f_model = davis_object_scores(pred, small.masks)
    assert j_model[0] == 1.0 and f_model[0] == 1.0
    # Back at 4x4 the pixel is the top-left 2x2 block: 4 of the square's 9 pixels, nothing
    # outside it. Only frame 1 is scored (first and last left out).
    j, f = score_at_annotation(pred, video)
    assert j[0] == pytest.approx(4 / 9)
    assert f[0] < 1.0


def test_copy_first_mask_holds_each_objects_first_visible_mask():
    gt = np.zeros((4, 2, 3, 3), dtype=bool)
    gt[0, 0, 0, 0] = gt[1, 0, 0, 1] = gt[2, 0, 0, 2] = True  # object 0 moves right
    gt[2, 1, 2, 2] = gt[3, 1, 2, 1] = True  # object 1 enters at frame 2
    pred = copy_first_mask(gt)
    assert pred[:, 0, 0, 0].all() and pred[:, 0].sum() == 4
    assert not pred[:2, 1].any() and pred[2:, 1, 2, 2].all() and pred[:, 1].sum() == 2
    # Scored like the model: frames 1-2; object 0 wrong on both (J 0), object 1 is empty
    # and absent at 1 (J 1) and right at 2 (J 1).
    j, _ = davis_object_scores(pred, gt)
    assert j.tolist() == [0.0, 1.0]
    assert not copy_first_mask(np.zeros((2, 1, 2, 2), dtype=bool)).any()


def test_score_video_scores_tracks_and_baseline_at_annotation_size():
    video = square_video()
    small = resize_video(video, (2, 2))
    track = Track("sq", 0, small.masks[:, 0], 0.9, 5)  # the shrunk object, every frame
    scores = score_video(video, small.masks, [track])
    assert scores.size == (4, 4) and scores.frames == 3
    assert scores.j.tolist() == pytest.approx([4 / 9])
    assert scores.baseline_j.tolist() == [1.0] and scores.baseline_f.tolist() == [1.0]
    # At 4x4 the track's IoU with the object is 4/9 < 0.5 on every frame: no frame is
    # covered and AP50 has no match, where at 2x2 both would be perfect.
    assert (scores.coverage.visible, scores.coverage.covered) == (3, 0)
    assert scores.ap[0].matched.sum() == 0 and scores.ap[0].n_gt == 1
    same = score_video(small, small.masks, [track])  # sizes match: scored as they are
    assert same.j.tolist() == [1.0] and same.coverage.covered == 3


def test_evaluate_reports_annotation_size_baseline_recall_and_speed():
    from ausm_stream.model import AUSM
    from ausm_stream.model.data import ShapesSpec, generate_video
    from ausm_stream.model.evaluation.runner import evaluate
    from ausm_stream.model.versions import DEFAULT_WEIGHTS

    model = AUSM.from_weights(DEFAULT_WEIGHTS)
    video = generate_video("test", 0, ShapesSpec(size=(96, 160), frames=6))
    report = evaluate(model, [video], progress=False)
    assert report.scored_at == "96x160 (model input 128x128)"
    assert report.videos == 1 and report.frames == 6
    for value in (report.j, report.f, report.baseline_j, report.baseline_f, report.ap):
        assert 0.0 <= value <= 1.0
    assert 0.0 <= report.object_recall <= 1.0
    assert math.isnan(report.tracks_per_object) or report.tracks_per_object >= 1.0
    assert report.fps > 0 and report.threads >= 1
    table = report.table()
    assert "copy-first-mask baseline J&F" in table and "object recall" in table
    assert "96x160" in table and "torch threads" in table


def test_the_longest_video_gets_its_own_window_figures():
    from ausm_stream.model.evaluation.runner import ModelClock, pool_scores

    def scores(name: str, frames: int, quality: float) -> object:
        video = square_video()
        t = np.arange(frames)
        masks = np.zeros((frames, 1, 4, 4), dtype=bool)
        masks[:, 0, :3, :3] = True
        long = Video(name, np.zeros((frames, 4, 4, 3), np.uint8), masks, video.classes, ("o",))
        pred = masks.copy()
        pred[t >= frames * quality, 0, :3, 2] = False  # the tail loses a column: J 6/9
        return score_video(long, pred, [])

    report = pool_scores([scores("short", 30, 1.0), scores("long", 72, 0.5)], ModelClock(), (4, 4))
    assert report.longest == "long, 72 frames"
    assert report.longest_window_j == pytest.approx([1.0, 0.5 * (1 + 6 / 9), 6 / 9])
    assert report.longest_last_over_first == pytest.approx(6 / 9)
    assert "longest video (long, 72 frames)" in report.table()
