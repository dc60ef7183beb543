"""The jump gate: a track whose mask leaps has jumped onto a neighbour."""

from __future__ import annotations

import torch
from torch import Tensor

from ausm_stream.model.tracking.config import TrackerConfig
from ausm_stream.model.tracking.masks import box_centres, box_sizes, mask_boxes
from ausm_stream.model.tracking.rules.tracks import Tracks
from ausm_stream.model.tracking.slots import Frame


def hide_jumps(f: Frame, tracks: Tracks) -> None:
    """Tracks seen at the frame before (and seen now) whose mask centre moved more than
    their gate (``prompted_jump_gate`` for prompted tracks, ``unprompted_jump_gate`` for the
    rest) times their last box size since are unseen at this frame: no object here moves
    that fast (a few pixels a frame), so the ID query has jumped onto a neighbour at a
    crossing. Shown on the wrong object, the track would also feed the neighbour's mask back
    as its history and stay there; unseen, its object is found again by its own query or by
    a detection (``reid_distance``, ``prompted_handover``)."""
    cfg, s = f.cfg, f.state
    if max(cfg.prompted_jump_gate, cfg.unprompted_jump_gate) <= 0 or not tracks.slots:
        return
    idx = torch.tensor(tracks.slots, device=f.device)
    last = s.slot_box[idx]
    gate, gated = jump_gates(cfg, last, s.slot_object_id[idx], s.slot_missing[idx], tracks.seen)
    if not bool(gated.any()):
        return
    tracks.seen &= ~(gated & moved_past(tracks.masks, last, gate))


def jump_gates(
    cfg: TrackerConfig, last: Tensor, object_id: Tensor, missing: Tensor, seen: Tensor
) -> tuple[Tensor, Tensor]:
    """Each track's gate (in units of its last box size) and whether it is gated at all:
    seen now and at the frame before, with a last box, under a gate above zero. Any leading
    dimensions (the batched tracker passes (B, P))."""
    gate = torch.where(object_id >= 0, cfg.prompted_jump_gate, cfg.unprompted_jump_gate).to(
        last.dtype
    )
    gated = (gate > 0) & (missing == 0) & (last[..., 2:] > last[..., :2]).all(-1) & seen
    return gate, gated


def moved_past(masks: Tensor, last: Tensor, gate: Tensor) -> Tensor:
    """Whether each mask's (..., H, W) box centre lies further from its last box's centre
    than ``gate`` times that box's size."""
    boxes = mask_boxes(masks.flatten(0, -3)).reshape(*masks.shape[:-2], 4)
    shift = (box_centres(boxes) - box_centres(last)).norm(dim=-1)
    return shift > gate * box_sizes(last)
