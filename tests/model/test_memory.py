"""The propagation memory (model/memory.py): label propagation by hand-worked cases, the
stream's memory bookkeeping, and a propagated mask that follows a moving object."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ausm_stream.errors import InvalidInputError
from ausm_stream.model import AUSM, AUSMConfig, StreamState
from ausm_stream.model.memory import Memory, propagate, receive_labels, remember_frame
from ausm_stream.model.tracking.masks import mask_iou


def one_hot_features(cells: list[int], channels: int = 4) -> torch.Tensor:
    """A (C, 1, len(cells)) row of cells whose features are the unit vectors e_i."""
    return torch.eye(channels)[cells].T.reshape(channels, 1, len(cells))


def test_each_pixel_takes_the_labels_of_its_most_similar_memory_pixels():
    # Memory: one frame of four cells e0..e3; slot 0 covers cells 0 and 1, slot 1 cell 3.
    labels = torch.tensor([[[1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 1.0]]])
    memory = Memory(
        one_hot_features([0, 1, 2, 3])[None, None],
        labels[None, None],
        torch.ones(1, 1, dtype=torch.bool),
    )
    query = one_hot_features([3, 1, 2])[None]  # looks like cells 3, 1 and 2
    p = propagate(query, memory, topk=1, temperature=0.1)
    assert p.shape == (1, 2, 1, 3)
    assert p[0, 0, 0].tolist() == [0.0, 1.0, 0.0]
    assert p[0, 1, 0].tolist() == [1.0, 0.0, 0.0]


def test_neighbours_are_weighted_by_a_softmax_of_their_similarity():
    labels = torch.tensor([[[1.0, 0.0]]])  # one slot on cell 0 of two
    memory = Memory(
        one_hot_features([0, 1])[None, None], labels[None, None], torch.ones(1, 1, dtype=torch.bool)
    )
    # Equally like both cells: half and half. Closer to cell 0 by 0.1 at temperature 0.1:
    # weights e^1 : e^0.
    query = torch.tensor([[[0.5, 0.6]], [[0.5, 0.5]], [[0.0, 0.0]], [[0.0, 0.0]]])[None]
    p = propagate(query, memory, topk=2, temperature=0.1)
    assert p[0, 0, 0, 0].item() == pytest.approx(0.5)
    e = torch.e
    assert p[0, 0, 0, 1].item() == pytest.approx(e / (e + 1.0), rel=1e-5)


def test_frames_not_in_the_memory_yet_are_ignored():
    features = one_hot_features([0, 1])[None].expand(2, -1, -1, -1)[None]  # two frames
    labels = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])[None]  # that disagree
    query = one_hot_features([0])[None]
    valid = torch.tensor([[True, False]])
    p = propagate(query, Memory(features, labels, valid), topk=1, temperature=0.1)
    assert p[0, 0, 0, 0].item() == 1.0
    empty = propagate(query, Memory(features, labels, torch.zeros_like(valid)), 1, 0.1)
    assert torch.equal(empty, torch.zeros(1, 1, 1, 1))


@pytest.fixture(scope="module")
def memory_model() -> AUSM:
    """Untrained network, propagation's gains turned up so its masks are the memory's."""
    torch.manual_seed(0)
    cfg = AUSMConfig.preset("real", image_size=(128, 128), memory_frames=2, fg_threshold=0.999)
    model = AUSM(cfg).eval()
    with torch.no_grad():
        model.net.readout.mask_gain.fill_(1000.0)
        model.net.readout.presence_gain.fill_(1000.0)
    return model


def smooth_texture(seed: int, size: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 12, 12, generator=g)
    big = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (big.clamp(0, 1) * 255).to(torch.uint8)[0].permute(1, 2, 0)


def square(y: int, x: int, side: int = 32, size: int = 128) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y : y + side, x : x + side] = True
    return mask


def test_a_prompted_object_is_followed_by_propagation(memory_model):
    """A textured scene slides 8 px a frame; the prompted square's mask slides with it."""
    model = memory_model
    texture = smooth_texture(3)
    state = model.init_state(seed=1)
    model.add_prompt(state, square(40, 40)[None], [5])
    for t in range(4):
        frame = torch.roll(texture, shifts=(8 * t, 8 * t), dims=(0, 1))
        result = model.step([state], frame[None])[0]
    assert result.prompt_object_ids.tolist() == [5]
    shown = result.masks[:1]
    moved = mask_iou(shown, square(64, 64)[None]).item()
    stayed = mask_iou(shown, square(40, 40)[None]).item()
    assert moved > 0.6, f"IoU with where the object went: {moved:.2f}"
    assert moved > stayed + 0.2


def test_the_memory_keeps_the_anchor_and_the_last_frames(memory_model):
    model = memory_model
    state = model.init_state(seed=2)
    h, w = model.cfg.grid_size
    looks = [torch.full((model.cfg.look_dim, h, w), float(i)) for i in range(4)]
    soft = [torch.full((model.cfg.n_id, h, w), 0.25 * i) for i in range(4)]
    state.slot_active[:] = True
    for t in range(4):
        state.slot_soft_masks = soft[t - 1] if t else state.slot_soft_masks
        receive_labels(state)
        state.frames_seen += 1
        remember_frame(state, looks[t], prompted=torch.tensor(t == 2))
    # After frame 3's step (its labels arrive with the next step): anchor = frame 2 (the
    # prompt's), then frames 3 and 2, newest first.
    assert [float(f[0, 0, 0]) for f in state.memory_features] == [2.0, 3.0, 2.0]
    assert state.memory_valid.tolist() == [True, True, True]
    state.slot_soft_masks = soft[3]
    receive_labels(state)
    assert [float(lab[0, 0, 0]) for lab in state.memory_labels] == [0.5, 0.75, 0.5]
    assert not bool(state.memory_anchor_due[0])


def test_a_retired_slot_leaves_nothing_in_the_memory(memory_model):
    from ausm_stream.model.tracking.config import TrackerConfig
    from ausm_stream.model.tracking.slots import Frame

    model = memory_model
    state = model.init_state()
    state.memory_labels[:] = 1.0
    q = model.cfg.num_queries
    frame = Frame(
        TrackerConfig.from_model(model.cfg),
        state,
        torch.zeros(q, 2),
        torch.zeros(q, *model.cfg.mask_size),
        None,
    )
    frame.retire(3)
    assert float(state.memory_labels[:, 3].abs().sum()) == 0.0
    assert bool((state.memory_labels[:, 4] == 1.0).all())


def test_the_memory_travels_with_the_state(memory_model):
    model = memory_model
    texture = smooth_texture(4)
    state = model.init_state(seed=3)
    model.add_prompt(state, square(30, 50)[None], [1])
    for t in range(3):
        model.step([state], torch.roll(texture, 4 * t, dims=1)[None])
    assert bool(state.memory_valid.all())
    restored = StreamState.from_bytes(state.to_bytes(), model.cfg)
    for name in ("memory_features", "memory_labels", "memory_valid", "slot_soft_masks"):
        assert torch.equal(getattr(restored, name), getattr(state, name)), name
    frame = torch.roll(texture, 12, dims=1)[None]
    a = model.step([state], frame)[0]
    b = model.step([restored], frame)[0]
    assert torch.equal(a.mask_logits, b.mask_logits)


def test_a_memory_needs_feature_looks():
    with pytest.raises(InvalidInputError, match="memory_frames"):
        AUSMConfig.preset("tiny", memory_frames=3)
