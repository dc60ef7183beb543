"""Synthetic videos are deterministic and split-disjoint; DAVIS and YouTube-VIS round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.model.data.formats import (
    read_davis,
    read_ytvis,
    resize_video,
    write_davis,
    write_ytvis,
)
from ausm_stream.model.data.sources import videos_from_spec

SPEC = ShapesSpec(size=(64, 64), frames=12, min_radius=5, max_radius=12)


def test_same_index_same_video_and_splits_differ():
    a, b = generate_video("train", 3, SPEC), generate_video("train", 3, SPEC)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    test = generate_video("test", 3, SPEC)
    assert not np.array_equal(a.frames, test.frames)
    with pytest.raises(ValueError, match="unknown split"):
        generate_video("holdout", 0, SPEC)


def test_videos_have_what_a_tracker_must_handle():
    videos = [generate_video("val", i, ShapesSpec(frames=24)) for i in range(30)]
    assert {c for v in videos for c in v.classes.tolist()} == {0, 1, 2, 3}
    assert any(v.num_instances >= 3 for v in videos)
    spans = [(v, s) for v in videos for s in v.occlusions]
    assert len(spans) >= 5
    for v, (k, first, last) in spans:  # hidden inside the span, visible on both sides
        assert not v.masks[first : last + 1, k].any()
        assert v.masks[first - 1, k].any() and v.masks[last + 1, k].any()
    # Some object is absent from the first frame (it enters later) or leaves before the end.
    assert any((~v.masks.any(axis=(2, 3))).any() for v in videos)
    # Visible masks of one frame never overlap (occlusion is resolved by depth order).
    for v in videos[:5]:
        assert v.masks.sum(axis=1).max() <= 1


def test_davis_round_trip(tmp_path):
    videos = [generate_video("test", i, SPEC) for i in range(2)]
    write_davis(videos, tmp_path, split="val")
    back = read_davis(tmp_path, "val")
    assert [v.name for v in back] == [v.name for v in videos]
    for v, w in zip(videos, back, strict=True):
        assert np.array_equal(v.masks, w.masks)  # PNG masks are lossless
        assert np.abs(v.frames.astype(int) - w.frames.astype(int)).mean() < 6  # JPEG is not


def test_ytvis_round_trip(tmp_path):
    videos = [generate_video("test", i, SPEC) for i in range(3)]
    write_ytvis(videos, tmp_path / "ann.json", tmp_path / "images")
    back = read_ytvis(tmp_path / "ann.json", tmp_path / "images")
    for v, w in zip(videos, back, strict=True):
        assert np.array_equal(v.masks, w.masks)
        assert np.array_equal(v.classes, w.classes) and w.class_names == v.class_names
    spec = f"ytvis:{tmp_path / 'ann.json'}:{tmp_path / 'images'}"
    assert len(videos_from_spec(spec, (64, 64))) == 3


def test_resize_and_bad_specs():
    v = generate_video("test", 0, SPEC)
    r = resize_video(v, (32, 48))
    assert r.frames.shape == (12, 32, 48, 3) and r.masks.shape[2:] == (32, 48)
    with pytest.raises(ValueError, match="use synthetic"):
        videos_from_spec("kinetics:/data", (64, 64))
    with pytest.raises(ValueError, match="not a DAVIS folder"):
        read_davis(Path("/nonexistent"))
