"""MODEL.md section 6: teacher-forced parallel forward == T streaming steps fed the same history."""

from __future__ import annotations

import pytest
import torch

from ausm_stream.model import AUSM, AUSMConfig
from ausm_stream.model.marker import masks_to_grid
from tests.conftest import disc_mask, make_frames

T = 8


def teacher_forced_history(n_id: int, size: tuple[int, int]):
    """Three objects that join the history at different steps and move."""
    masks = torch.zeros(1, T, n_id, *size, dtype=torch.bool)
    active = torch.zeros(1, T, n_id, dtype=torch.bool)
    joins = {3: 1, 7: 2, 11: 5}  # slot -> first step whose history holds it
    for slot, start in joins.items():
        for t in range(start, T):
            active[0, t, slot] = True
            masks[0, t, slot] = disc_mask(
                size, 20 + 10 * slot % 90 + 3 * t, 30 + 4 * t, 9 + slot % 5
            )
    masks[0, 6, 7] = False  # slot 7 fully occluded at one step
    return masks, active


@pytest.fixture(scope="module")
def real_model() -> AUSM:
    """The real preset (pretrained backbone, history on the 1/16 grid) on small frames."""
    torch.manual_seed(0)
    return AUSM(AUSMConfig.preset("real", image_size=(128, 128))).eval()


@pytest.fixture(scope="module")
def memory_model() -> AUSM:
    """The real preset with a propagation memory, its readout's gains all on (the painting's
    starts at 0), and a tracker that starts, merges and retires nothing, so that the memory
    holds exactly the history fed in."""
    torch.manual_seed(0)
    cfg = AUSMConfig.preset(
        "real", image_size=(128, 128), memory_frames=2, fg_threshold=0.999, dedup_iou=1.0
    )
    model = AUSM(cfg).eval()
    with torch.no_grad():
        model.net.readout.paint_gain.fill_(1.0)
    return model


@pytest.mark.parametrize("preset", ["tiny", "real", "memory"])
def test_parallel_forward_equals_streaming_steps(preset, request):
    model = request.getfixturevalue(f"{preset}_model")
    cfg = model.cfg
    frames = make_frames(T, seed=3)
    masks, active = teacher_forced_history(cfg.n_id, cfg.image_size)

    with torch.no_grad():
        parallel = model.forward_parallel(frames[None], masks, active)

    state = model.init_state(seed=1)
    for t in range(T):
        # Feed the same history the parallel pass saw, not the model's own predictions.
        state.slot_active = active[0, t].clone()
        state.slot_masks = masks_to_grid(masks[0, t])
        if cfg.memory_frames:  # and the same labels to the memory
            state.slot_soft_masks = state.slot_masks.clone()
        r = model.step([state], frames[t : t + 1])[0]
        # float32 rounding differs between the paths' batch shapes: relative to the
        # logits' size (propagation's logit(P) reaches +-6.9 on top of the decoder's)
        scale = max(1.0, float(parallel.mask_logits[0, t].abs().max()))
        mask_diff = (r.mask_logits - parallel.mask_logits[0, t]).abs().max() / scale
        class_diff = (r.class_logits - parallel.class_logits[0, t]).abs().max()
        assert mask_diff <= 1e-4, f"frame {t}: mask logits differ by {mask_diff} (relative)"
        assert class_diff <= 1e-4, f"frame {t}: class logits differ by {class_diff}"


@pytest.mark.parametrize("preset", ["tiny", "real", "memory"])
def test_history_changes_predictions(preset, request):
    """Guard against a vacuous equivalence: the history must actually reach the outputs."""
    model = request.getfixturevalue(f"{preset}_model")
    frames = make_frames(T, seed=3)
    masks, active = teacher_forced_history(model.cfg.n_id, model.cfg.image_size)
    with torch.no_grad():
        with_history = model.forward_parallel(frames[None], masks, active)
        without = model.forward_parallel(
            frames[None], torch.zeros_like(masks), torch.zeros_like(active)
        )
    assert torch.equal(with_history.mask_logits[0, 0], without.mask_logits[0, 0])
    assert (with_history.mask_logits[0, -1] - without.mask_logits[0, -1]).abs().max() > 1e-2


def test_equivalence_holds_with_the_track_prior():
    """The experimental first-layer prior is computed identically on both paths."""
    from tests.conftest import make_model

    model = make_model(track_prior=True)
    frames = make_frames(T, seed=4)
    masks, active = teacher_forced_history(model.cfg.n_id, model.cfg.image_size)
    with torch.no_grad():
        parallel = model.forward_parallel(frames[None], masks, active)
        plain = make_model().forward_parallel(frames[None], masks, active)
    assert (parallel.mask_logits[0, -1] - plain.mask_logits[0, -1]).abs().max() > 1e-3
    state = model.init_state(seed=1)
    for t in range(T):
        state.slot_active = active[0, t].clone()
        state.slot_masks = masks_to_grid(masks[0, t])
        r = model.step([state], frames[t : t + 1])[0]
        assert (r.mask_logits - parallel.mask_logits[0, t]).abs().max() <= 1e-4
