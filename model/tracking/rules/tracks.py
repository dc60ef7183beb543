"""Each track's own ID query: its mask, whether it is shown, repeats, missing frames.

A track is visible when its foreground score exceeds ``track_threshold`` and its mask is
non-empty, unless a later rule hides it (a repeat of another track, a jump). While unseen
it stays in A with an empty mask, so its ID query can find the object again after an
occlusion; past ``max_missing`` consecutive unseen frames it is retired and its ID vector
returns to the pool. A prompted object's track is not retired (``prompted_max_missing``,
default never): whoever prompted it expects it found again when it comes back into view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ausm_stream.model.marker import masks_to_grid
from ausm_stream.model.tracking.masks import mask_iou, upsample_masks
from ausm_stream.model.tracking.rules.connected import connected_parts
from ausm_stream.model.tracking.slots import Frame


@dataclass
class Tracks:
    """The tracks active when the frame came in, as their own queries show them."""

    slots: list[int]
    masks: Tensor  # (k, H, W) bool
    seen: Tensor  # (k,) bool: shown at this frame, until a rule hides it


def own_masks(f: Frame) -> Tracks:
    """Every active track's mask from its ID query (cut to where its object was, with
    ``connected_tracks``), seen where its score passes ``track_threshold``."""
    cfg, s = f.cfg, f.state
    slots = f.active_slots()
    logits = f.mask_logits[slots]
    if cfg.connected_tracks:
        logits = connected_parts(s.slot_masks[slots], logits)
    masks = upsample_masks(logits, cfg.image_size)
    seen = (f.scores[slots] > cfg.track_threshold) & masks.flatten(1).any(1)
    return Tracks(slots, masks, seen)


def repeats(f: Frame, tracks: Tracks) -> Tensor:
    """Seen tracks whose mask repeats another's (IoU > ``dedup_iou``): all but the one whose
    mask best continues its own history mask. When an object hides behind another, its query
    tends to jump onto the occluder; the occluder's track keeps the mask. (k,) int64 over
    ``tracks``: for each repeat, the index of the kept track it repeats (the most
    overlapping); -1 for the rest."""
    seen, masks = tracks.seen, tracks.masks
    twin = torch.full(seen.shape, -1, dtype=torch.int64, device=seen.device)
    idx = seen.nonzero().flatten().tolist()
    if len(idx) < 2:
        return twin
    slots = torch.tensor(tracks.slots, device=seen.device)[idx]
    continuity = history_continuity(masks_to_grid(masks[idx]), f.state.slot_masks[slots])
    order = sorted(range(len(idx)), key=lambda i: (-float(continuity[i]), int(slots[i])))
    ious = mask_iou(masks[idx], masks[idx])
    kept: list[int] = []
    for i in order:
        j = max(kept, key=lambda j: float(ious[i, j]), default=None)
        if j is not None and float(ious[i, j]) > f.cfg.dedup_iou:
            twin[idx[i]] = idx[j]
        else:
            kept.append(i)
    return twin


def history_continuity(now: Tensor, before: Tensor) -> Tensor:
    """How well masks on the 1/8 grid (..., h8, w8) continue their history masks: the
    soft IoU of the two, 0 where both are empty."""
    return torch.minimum(now, before).sum((-2, -1)) / torch.maximum(now, before).sum(
        (-2, -1)
    ).clamp(min=1e-6)


def hide_repeats(tracks: Tracks, twin: Tensor) -> None:
    """A repeat is unseen (kept, empty history) until its own object comes back."""
    tracks.seen &= twin < 0


def show_or_miss(f: Frame, tracks: Tracks) -> None:
    """Seen tracks are shown; the others count a missing frame and are retired past their
    limit. Tracks retired earlier in this frame (a merged twin) are left alone."""
    cfg, s = f.cfg, f.state
    active = s.slot_active.tolist()
    for slot, mask, visible in zip(tracks.slots, tracks.masks, tracks.seen.tolist(), strict=True):
        if not active[slot]:
            continue  # its identity lives on in its twin's slot
        if visible:
            f.show(slot, mask, float(f.scores[slot]), slot)
            continue
        s.slot_missing[slot] += 1
        prompted = int(s.slot_object_id[slot]) >= 0
        if prompted and cfg.prompted_max_missing == 0:
            continue  # a prompted object is kept until it is found again
        limit = cfg.prompted_max_missing if prompted else cfg.max_missing
        if int(s.slot_missing[slot]) > limit:
            f.retire(slot)
