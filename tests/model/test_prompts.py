"""Prompts at any frame start a track carrying the caller's object id; boxes/points -> masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ausm_stream.model import box_masks, point_masks
from tests.conftest import disc_mask, make_frames, make_model


@pytest.mark.parametrize("prompt_frame", [0, 3])
def test_prompt_starts_a_track_at_its_frame(prompt_frame):
    model = make_model(fg_threshold=0.85)
    state = model.init_state(seed=2)
    frames = make_frames(7, seed=9)
    mask = disc_mask(model.cfg.image_size, 60, 50, 14)
    track_id = None
    for t in range(7):
        if t == prompt_frame:
            model.add_prompt(state, mask[None], [42])
        r = model.step([state], frames[t : t + 1])[0]
        ids = r.prompt_object_ids.tolist()
        if t < prompt_frame:
            assert 42 not in ids
            continue
        slot = (state.slot_object_id == 42).nonzero().flatten().tolist()
        assert len(slot) == 1 and bool(state.slot_active[slot[0]])
        if t == prompt_frame:
            k = ids.index(42)
            assert torch.equal(r.masks[k], mask)  # the prompt is the object's mask at its frame
            assert r.scores[k] == 1.0
            track_id = int(r.track_ids[k])
        # From then on the same track id holds the object in the stream's track table.
        assert int(state.slot_track_id[slot[0]]) == track_id
        if 42 in ids:
            assert int(r.track_ids[ids.index(42)]) == track_id


def test_reprompting_an_object_keeps_its_track_id():
    model = make_model(fg_threshold=0.85)
    state = model.init_state()
    frames = make_frames(3, seed=1)
    size = model.cfg.image_size
    model.add_prompt(state, disc_mask(size, 40, 40, 10)[None], [7])
    first = model.step([state], frames[0:1])[0]
    moved = disc_mask(size, 80, 70, 12)
    model.add_prompt(state, moved[None], [7])
    second = model.step([state], frames[1:2])[0]
    k1, k2 = first.prompt_object_ids.tolist().index(7), second.prompt_object_ids.tolist().index(7)
    assert first.track_ids[k1] == second.track_ids[k2]
    assert torch.equal(second.masks[k2], moved)


def test_box_and_point_prompts_become_masks():
    boxes = box_masks([(10, 20, 30, 25), (-5, -5, 4, 3)], (32, 40))
    assert boxes.shape == (2, 32, 40) and boxes.dtype == np.bool_
    assert int(boxes[0].sum()) == 20 * 5 and bool(boxes[0, 20, 10]) and not bool(boxes[0, 25, 30])
    assert int(boxes[1].sum()) == 4 * 3  # clipped to the frame
    points = point_masks([[(10, 10)], [(0, 0), (39, 31)]], (32, 40), radius=2)
    assert bool(points[0, 10, 10]) and bool(points[0, 12, 10]) and not bool(points[0, 13, 10])
    assert bool(points[1, 0, 0]) and bool(points[1, 31, 39])
    with pytest.raises(ValueError, match="empty"):
        box_masks([(50, 50, 60, 60)], (32, 40))
    with pytest.raises(ValueError, match="outside"):
        point_masks([[(45, 3)]], (32, 40))
