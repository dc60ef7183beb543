"""Prompts drawn on a source frame land where ingest puts that frame on the model's input."""

from __future__ import annotations

import numpy as np
import pytest

from ausm_stream.errors import InvalidInputError
from ausm_stream.pipeline.geometry import SourceToModel

G = SourceToModel(source=(360, 640), model=(128, 128))


def test_boxes_and_points_scale_per_axis():
    assert G.box([64, 36, 320, 180]) == pytest.approx((12.8, 12.8, 64.0, 64.0))
    # pixel centres: the last source pixel (639.5, 359.5) lands at (127.9, 127.8) - 0.5
    assert G.points([[639, 359]]) == [pytest.approx((127.4, 127.322), abs=1e-3)]
    # ... and a first pixel that would land before the input's edge stays on it
    wide = SourceToModel(source=(1080, 1920), model=(128, 128))
    assert wide.points([[0, 0]]) == [(0.0, 0.0)]


def test_masks_resize_to_the_model_input():
    mask = np.zeros((360, 640), bool)
    mask[:180, 320:] = True  # the top-right quarter
    small = G.mask(mask)
    assert small.shape == (128, 128)
    assert small[:64, 64:].all() and not small[64:].any() and not small[:, :64].any()


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
