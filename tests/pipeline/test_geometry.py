"""Frames fit the model's input (letterbox or stretch), and prompts drawn on a source frame
land where ingest puts that frame."""

from __future__ import annotations

import numpy as np
import pytest

from ausm_stream.errors import InvalidInputError
from ausm_stream.pipeline.geometry import Placement

G = Placement.fit((360, 640), (128, 128), "stretch")
WIDE = Placement.fit((360, 640), (128, 128), "letterbox")


def test_letterbox_keeps_proportions_and_centres_the_frame():
    # 640x360 scaled by 0.2 is 128x72, centred: bands of 28 rows above and below
    assert WIDE.content == (28, 0, 72, 128)
    assert Placement.fit((640, 360), (128, 128), "letterbox").content == (0, 28, 128, 72)
    assert Placement.fit((256, 256), (128, 128), "letterbox").content == (0, 0, 128, 128)
    assert G.content == (0, 0, 128, 128)
    with pytest.raises(InvalidInputError, match="one of"):
        Placement.fit((10, 10), (8, 8), "pad")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="does not fit"):
        Placement((10, 10), (8, 8), 4, 0, 8, 8)


def test_a_letterboxed_frame_has_black_bands_and_crops_back():
    content = np.full((72, 128, 3), 200, np.uint8)
    placed = WIDE.place(content)
    assert placed.shape == (128, 128, 3)
    assert not placed[:28].any() and not placed[100:].any() and (placed[28:100] == 200).all()
    assert np.array_equal(WIDE.crop(placed[None])[0], content)
    masks = np.zeros((2, 128, 128), bool)
    masks[0, 40:50, 10:20] = True
    masks[1, :10] = True  # only in the band: nothing left after the crop
    cut = WIDE.crop(masks)
    assert cut.shape == (2, 72, 128) and not cut[1].any()
    ys, xs = np.nonzero(cut[0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (10, 12, 20, 22)


def test_boxes_and_points_scale_per_axis():
    assert G.box([64, 36, 320, 180]) == pytest.approx((12.8, 12.8, 64.0, 64.0))
    # pixel centres: the last source pixel (639.5, 359.5) lands at (127.9, 127.8) - 0.5
    assert G.points([[639, 359]]) == [pytest.approx((127.4, 127.322), abs=1e-3)]
    # ... and a first pixel that would land before the input's edge stays on it
    wide = Placement.fit((1080, 1920), (128, 128), "stretch")
    assert wide.points([[0, 0]]) == [(0.0, 0.0)]
    # letterboxed: one scale (0.2) on both axes, shifted below the top band
    assert WIDE.box([64, 36, 320, 180]) == pytest.approx((12.8, 28 + 7.2, 64.0, 28 + 36.0))
    assert WIDE.points([[0, 0]]) == [(0.0, 28.0)]


def test_masks_resize_to_the_model_input():
    mask = np.zeros((360, 640), bool)
    mask[:180, 320:] = True  # the top-right quarter
    small = G.mask(mask)
    assert small.shape == (128, 128)
    assert small[:64, 64:].all() and not small[64:].any() and not small[:, :64].any()
    boxed = WIDE.mask(mask)  # into the content box, none of it in the bands
    assert boxed.shape == (128, 128) and boxed[28:64, 64:].all() and boxed.sum() == 36 * 64


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: G.mask(np.ones((128, 128), bool)), "128x128, the stream's frames are 360x640"),
        (lambda: G.box([0, 0, 700, 10]), "x1 <= 640"),
        (lambda: G.box([10, 10, 5, 20]), "x0 < x1"),
        (lambda: G.points([[640, 0]]), "0 <= x < 640"),
        (lambda: G.points([]), "at least one"),
    ],
)
def test_prompts_outside_the_frame_say_what_fits(call, words):
    with pytest.raises(InvalidInputError, match=words.replace("(", r"\(")):
        call()
