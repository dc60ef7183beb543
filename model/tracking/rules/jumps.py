"""The jump gate: a track whose mask leaps has jumped onto a neighbour."""

from __future__ import annotations

import torch

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
    gate = torch.where(
        s.slot_object_id[idx] >= 0, cfg.prompted_jump_gate, cfg.unprompted_jump_gate
    ).to(last.dtype)
    gated = (
        (gate > 0) & (s.slot_missing[idx] == 0) & (last[:, 2:] > last[:, :2]).all(1) & tracks.seen
    )
    if not bool(gated.any()):
        return
    shift = (box_centres(mask_boxes(tracks.masks)) - box_centres(last)).norm(dim=1)
    tracks.seen &= ~(gated & (shift > gate * box_sizes(last)))
