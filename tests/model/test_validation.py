"""Caller mistakes get a ValueError that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ausm_stream.errors import AUSMStreamError
from tests.conftest import make_frames


@pytest.mark.parametrize(
    "frames, message",
    [
        (torch.zeros(1, 64, 64, 3, dtype=torch.uint8), r"\(N, 128, 128, 3\).*got \(1, 64, 64, 3\)"),
        (torch.zeros(1, 128, 128, 3, dtype=torch.float32), "uint8"),
        (torch.zeros(128, 128, 3, dtype=torch.uint8), "got \\(128, 128, 3\\)"),
        (torch.zeros(1, 128, 128, 4, dtype=torch.uint8), "got \\(1, 128, 128, 4\\)"),
        (torch.zeros(2, 128, 128, 3, dtype=torch.uint8), "2 frames for 1 states"),
    ],
)
def test_bad_frames(tiny_model, frames, message):
    with pytest.raises(ValueError, match=message) as info:
        tiny_model.step([tiny_model.init_state()], frames)
    assert isinstance(info.value, AUSMStreamError)


def test_numpy_frames_are_accepted(tiny_model):
    r = tiny_model.step([tiny_model.init_state()], make_frames(1).numpy())
    assert r[0].frame_index == 0


@pytest.mark.parametrize(
    "masks, ids, message",
    [
        (torch.ones(1, 64, 64, dtype=torch.bool), [1], r"\(K, 128, 128\).*got \(1, 64, 64\)"),
        (torch.ones(1, 128, 128, dtype=torch.uint8), [1], "bool"),
        (torch.ones(2, 128, 128, dtype=torch.bool), [1], "2 prompt masks but 1 object ids"),
        (torch.ones(2, 128, 128, dtype=torch.bool), [1, 1], "distinct"),
        (torch.ones(1, 128, 128, dtype=torch.bool), [-3], ">= 0"),
        (torch.zeros(1, 128, 128, dtype=torch.bool), [1], "empty"),
        (np.ones((17, 128, 128), dtype=bool), list(range(17)), "exceed the ID buffer of 16"),
    ],
)
def test_bad_prompts(tiny_model, masks, ids, message):
    state = tiny_model.init_state()
    with pytest.raises(ValueError, match=message):
        tiny_model.add_prompt(state, masks, ids)
    assert int(state.pending_object_id.max()) == -1  # nothing half-applied


def test_bad_states(tiny_model):
    with pytest.raises(ValueError, match="StreamState"):
        tiny_model.step([{"not": "a state"}], make_frames(1))
    with pytest.raises(ValueError, match="non-empty list"):
        tiny_model.step([], make_frames(0))
