"""Prompts queued by ``add_prompt`` for this frame.

A prompt for an object id the stream already tracks replaces that track's mask; a prompt
whose mask overlaps an unprompted visible track by more than ``dedup_iou`` adopts that track
(same track id, now carrying the object id); otherwise it starts a new track, displacing an
unprompted one when the ID buffer is full. On this frame the prompted track's mask is the
prompt itself (score 1). This matches training: a prompt is a perfect detection at its
frame, and the object is tracked from the next frame on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ausm_stream.model.tracking.masks import mask_iou
from ausm_stream.model.tracking.slots import Frame


def apply_prompts(f: Frame) -> list[Tensor]:
    """Install queued prompts; returns their masks for de-duplicating detections."""
    s = f.state
    pending = (s.pending_object_id >= 0).nonzero().flatten().tolist()
    if not pending:
        return []
    # A prompt's class evidence: that of the query whose 1/4-grid mask overlaps it best.
    query_masks = f.mask_logits > 0
    installed = []
    for p in pending:
        object_id = int(s.pending_object_id[p])
        mask = s.pending_masks[p].clone()
        bound = ((s.slot_object_id == object_id) & s.slot_active).nonzero().flatten().tolist()
        if bound:
            slot = bound[0]
        else:
            slot = _adoptable(f, mask)
            if slot is None:
                if not f.free_slots():
                    f.retire(_eviction_victim(f))
                slot = f.allocate(object_id)
            s.slot_object_id[slot] = object_id
        f.fresh_look.add(slot)  # a prompt says what the object looks like now
        f.prompted.add(slot)
        small = F.avg_pool2d(mask[None, None].float(), 4)[0] > 0.5
        f.show(slot, mask, 1.0, int(mask_iou(small, query_masks).argmax()))
        installed.append(mask)
        s.pending_object_id[p] = -1
        s.pending_masks[p] = False
    return installed


def _eviction_victim(f: Frame) -> int:
    """The unprompted track a prompt displaces when the ID buffer is full: the one unseen
    longest, else the visible one with the lowest score (``add_prompt`` guarantees one)."""
    s = f.state
    unprompted = [i for i in f.active_slots() if int(s.slot_object_id[i]) < 0]
    return min(
        unprompted,
        key=lambda i: (-int(s.slot_missing[i]), f.emitted[i][1] if i in f.emitted else 0.0, i),
    )


def _adoptable(f: Frame, mask: Tensor) -> int | None:
    """The unprompted visible track this prompt points at, if its mask overlaps enough."""
    candidates = [slot for slot in sorted(f.emitted) if int(f.state.slot_object_id[slot]) < 0]
    if not candidates:
        return None
    ious = mask_iou(mask[None], torch.stack([f.emitted[c][0] for c in candidates]))[0]
    best = int(ious.argmax())
    return candidates[best] if float(ious[best]) > f.cfg.dedup_iou else None
