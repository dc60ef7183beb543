"""``update_stream``: one stream's track table after its network step, rule by rule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.marker import masks_to_grid
from ausm_stream.model.state import StreamState
from ausm_stream.model.tracking.config import TrackerConfig
from ausm_stream.model.tracking.looks import choose_look
from ausm_stream.model.tracking.masks import mask_boxes
from ausm_stream.model.tracking.results import StepResult
from ausm_stream.model.tracking.rules.detections import add_detections
from ausm_stream.model.tracking.rules.handover import hand_over_prompted
from ausm_stream.model.tracking.rules.jumps import hide_jumps
from ausm_stream.model.tracking.rules.looks import (
    look_at_visible,
    merge_twins,
    remember_looks,
    trade_identities,
)
from ausm_stream.model.tracking.rules.prompts import apply_prompts
from ausm_stream.model.tracking.rules.tracks import hide_repeats, own_masks, repeats, show_or_miss
from ausm_stream.model.tracking.slots import Frame


def update_stream(
    cfg: AUSMConfig,
    state: StreamState,
    class_logits: Tensor,
    mask_logits: Tensor,
    frame: Tensor | None = None,
    look_features: Tensor | None = None,
    propagated: Tensor | None = None,
) -> StepResult:
    """Advance one stream's track table after its network step; mutates ``state``.

    ``class_logits`` (Q, C + 1) and ``mask_logits`` (Q, h4, w4) are the stream's network
    outputs, ID slots first. Tracks get their look (``appearance_margin``, ``reid_look``)
    from ``frame`` (H, W, 3) uint8, the frame the network saw, when ``cfg.look`` is
    ``"colour"``, and from ``look_features`` (look_dim, h, w) at any grid when it is
    ``"features"``; without it identities follow the ID queries and positions alone.
    ``propagated`` (N_id, h8, w8), the slots' masks propagated from the stream's memory,
    is what the tracks leave as this frame's labels in that memory (:func:`soft_history`).
    """
    tc = TrackerConfig.from_model(cfg)
    look = choose_look(tc, state.slot_appearance.shape[1], frame, look_features)
    f = Frame(tc, state, class_logits, mask_logits, look)
    # First, what each track's own query shows, cut to where its object was.
    tracks = own_masks(f)
    # Tracks shown twice on one mask, found while both are still seen.
    twin = repeats(f, tracks)
    # Before the repeats are hidden: a repeat that looks like its twin is the same object.
    merge_twins(f, tracks, twin)
    # The other repeats are an occluded object's query on its occluder: unseen.
    hide_repeats(tracks, twin)
    # Among the tracks still seen: one whose mask leapt is on a neighbour.
    hide_jumps(f, tracks)
    # The tracks' verdicts are final: shown, or a frame missing (and maybe retired).
    show_or_miss(f, tracks)
    # After the tracks: a prompt replaces or adopts what a track shows.
    prompt_masks = apply_prompts(f)
    # After tracks and prompts: only what neither shows is new; lost tracks come first.
    add_detections(f, prompt_masks)
    # After the detections: the young track that found a lost prompted object exists now.
    hand_over_prompted(f)
    # Every visible track is placed: what each one looks like at this frame.
    seen = look_at_visible(f)
    # Names follow looks, after every rule that places or names a track.
    trade_identities(f, seen)
    # After the trades: each identity's look learns from its own object.
    remember_looks(f, seen)
    # Last: the history M_t, boxes, classes and ages the next frame starts from.
    return _record(f, class_logits, mask_logits, propagated)


def _record(
    f: Frame, class_logits: Tensor, mask_logits: Tensor, propagated: Tensor | None
) -> StepResult:
    """Write what this frame showed into the state (the history masks M_t on the 1/8 grid,
    boxes, labels, class evidence, ages) and return it, ordered by track id, with the raw
    network outputs."""
    state = f.state
    slots, masks = f.visible_masks()
    grid = torch.zeros_like(state.slot_masks)
    if slots:
        grid[slots] = masks_to_grid(masks).to(grid.dtype)
        state.slot_box[slots] = mask_boxes(masks)
        queries = torch.tensor([f.emitted[i][2] for i in slots], device=f.device)
        state.slot_label[slots] = f.labels[queries]
        state.slot_class_evidence[slots] += f.class_probs[queries]
        state.slot_age[slots] += 1
    state.slot_masks = grid  # M_t: unseen tracks keep an empty mask
    if propagated is not None:  # the model keeps a propagation memory
        state.slot_soft_masks = soft_history(grid, slots, f.prompted, propagated)
    frame_index = state.frames_seen
    state.frames_seen += 1

    # Every tensor of the result stays on the state's device; the worker copies a whole
    # batch's results to the host at once (results_to_host).
    idx = torch.tensor(slots, dtype=torch.int64, device=f.device)
    order = torch.argsort(state.slot_track_id[idx])
    idx = idx[order]
    # A track has one class, not one per frame: the one with the most probability summed
    # over the frames it was visible (as video-instance evaluations score a track).
    labels = state.slot_class_evidence[idx].argmax(-1)
    return StepResult(
        frame_index=frame_index,
        track_ids=state.slot_track_id[idx],
        labels=labels,
        label_names=[f.cfg.class_names[i] for i in labels.tolist()],
        scores=torch.tensor(
            [f.emitted[s][1] for s in idx.tolist()], dtype=torch.float32, device=f.device
        ),
        masks=masks[order],
        boxes=state.slot_box[idx],
        prompt_object_ids=state.slot_object_id[idx],
        class_logits=class_logits,
        mask_logits=mask_logits,
    )


def soft_history(grid: Tensor, slots: list[int], prompted: set[int], propagated: Tensor) -> Tensor:
    """M_t as probabilities, the labels this frame leaves in the propagation memory
    (model/memory.py): where a track is shown, its propagated mask P_t within one cell of
    the mask shown; a prompt's mask as given. Propagating probabilities, not thresholded
    masks, keeps what was unsure unsure (on ``vos-dev``, propagation alone scored J&F 0.61
    from its own probabilities and 0.50 from thresholded masks)."""
    soft = torch.zeros_like(grid)
    if slots:
        idx = torch.tensor(slots, dtype=torch.int64, device=grid.device)
        near = F.max_pool2d(grid[idx][:, None], 3, stride=1, padding=1)[:, 0] > 0
        soft[idx] = propagated[idx].to(grid.dtype) * near
    for slot in prompted & set(slots):
        soft[slot] = grid[slot]
    return soft
