"""The output records: a frame's tracks as rows in source pixels, and masks read back."""

from __future__ import annotations

import numpy as np
import pytest

from ausm_stream import rle
from ausm_stream.errors import RecordError
from ausm_stream.pipeline.tracks import (
    TRACKS_SCHEMA,
    FrameTracks,
    encode_tracks,
    scale_mask,
    source_masks,
)


def test_rows_scale_boxes_and_areas_to_source_pixels():
    masks = np.zeros((1, 16, 24), dtype=bool)
    masks[0, 4:8, 6:12] = True
    frame = FrameTracks(
        "cam-1",
        5,
        10,
        1_700_000_000_000_000_000,
        480,
        720,
        np.array([3]),
        ["circle"],
        np.array([0.9], np.float32),
        masks,
        np.array([-1]),
    )
    batch = encode_tracks([frame], "m@1")
    assert batch.schema.equals(TRACKS_SCHEMA)
    row = batch.to_pylist()[0]
    assert row["bbox"] == {"x0": 180.0, "y0": 120.0, "x1": 360.0, "y1": 240.0}
    assert row["area"] == 24 * 30 * 30 and row["prompt_object_id"] is None
    assert np.array_equal(rle.decode(row["mask_rle"], 16, 24), masks[0])


def test_boxes_and_areas_are_those_of_the_mask_read_back_at_any_scale():
    """1.5x, 2.37x, 0.8x...: the row's area and box equal the pixels of the mask that
    source_masks decodes, whole scale or not."""
    rng = np.random.default_rng(7)
    masks = rng.random((6, 72, 128)) < 0.02
    masks[:, 30:40, 50:70] = True
    masks[5] = False
    for height, width in [(108, 192), (171, 303), (58, 102), (720, 1280)]:
        frame = FrameTracks(
            "cam-1",
            0,
            0,
            0,
            height,
            width,
            np.arange(1, 7),
            ["circle"] * 6,
            np.ones(6, np.float32),
            masks,
            np.full(6, -1),
        )
        rows = encode_tracks([frame], "m@1")
        _, big = source_masks(rows)
        for row, mask in zip(rows.to_pylist(), big, strict=True):
            assert row["area"] == mask.sum()
            if mask.any():
                ys, xs = np.nonzero(mask)
                box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            else:
                box = [0, 0, 0, 0]
            assert list(row["bbox"].values()) == box, (height, width)


def test_masks_read_back_at_the_source_size_cell_by_cell():
    mask = np.zeros((4, 6), bool)
    mask[1, 2] = True
    # 2x on y, 1.5x on x: the pixels whose centres lie in cell (1, 2) are rows 2-3, column 3
    # ((3 + 0.5) * 6 / 9 = 2.33; column 4 lands on 3.0, the next cell)
    big = scale_mask(mask, 8, 9)
    assert big.shape == (8, 9) and big.sum() == 2 and big[2:4, 3].all()
    rows = [
        {
            "frame_idx": 7,
            "mask_rle": rle.encode(mask[None])[0],
            "mask_height": 4,
            "mask_width": 6,
            "source_height": 8,
            "source_width": 9,
        }
    ]
    idx, masks = source_masks(rows)
    assert idx.tolist() == [7] and np.array_equal(masks[0], big)
    with pytest.raises(RecordError, match="select one stream"):
        source_masks([*rows, {**rows[0], "source_width": 10}])
