"""Detections (``filter_fg``): new objects, and lost tracks found again.

Detection queries with a score above ``fg_threshold`` and at least ``min_mask_area``
pixels, greedily de-duplicated (highest score first) against each other, visible tracks and
prompts by mask IoU, each continue a track unseen this frame when one was last seen close by
(``reid_distance``: an object back from behind another keeps its id) or, if confident, when
one looks like it (``reid_look``), else get a fresh slot from the unused part of the ID
buffer while there is room. Weaker detections (above ``reid_threshold``) may continue a
lost track but never start one (ByteTrack's low-score association). A prompted object away
for longer than ``max_missing`` is continued by a confident detection of its class
anywhere in the frame: it may come back through another edge.

Re-identifying a detection near where a track was lost ignores classes (one frame's class
head may disagree); bringing a prompted object back anywhere in the frame compares the
detection's class with the one the track showed when last seen.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ausm_stream.model.tracking.masks import (
    box_centres,
    box_sizes,
    mask_boxes,
    mask_iou,
    upsample_masks,
)
from ausm_stream.model.tracking.slots import Frame


def add_detections(f: Frame, prompt_masks: list[Tensor]) -> None:
    """Confident detections continue a lost track or start a new one; weaker ones (above
    ``reid_threshold``) may only continue a lost track, as ByteTrack's second association
    does: a detection query sees an object back from an occlusion but, having learned not to
    claim objects in the history, scores it low."""
    cfg = f.cfg
    det = torch.arange(cfg.n_id, cfg.num_queries, device=f.device)
    floor = min(cfg.fg_threshold, cfg.reid_threshold) if cfg.reid_distance > 0 else cfg.fg_threshold
    keep = (f.scores[det] > floor).nonzero().flatten()
    if keep.numel() == 0:
        return
    det = det[keep]
    # Highest score first; ties broken by query index so the order is deterministic.
    order = sorted(range(det.numel()), key=lambda i: (-float(f.scores[det[i]]), int(det[i])))
    det = det[order]
    masks = upsample_masks(f.mask_logits[det], cfg.image_size)
    areas = masks.flatten(1).sum(1).tolist()
    _, visible = f.visible_masks()
    taken = torch.cat([visible, *(m[None] for m in prompt_masks)])
    # Overlaps with what is already taken, and among the detections, computed once: a
    # detection is dropped if it repeats either, or an earlier detection that was kept.
    over_taken = (mask_iou(masks, taken) > cfg.dedup_iou).any(1).tolist()
    over_det = mask_iou(masks, masks) > cfg.dedup_iou
    kept: list[int] = []
    for i, (q, mask) in enumerate(zip(det.tolist(), masks, strict=True)):
        if areas[i] < cfg.min_mask_area or over_taken[i] or bool(over_det[i, kept].any()):
            continue
        score = float(f.scores[q])
        slot = lost_track(f, mask, int(f.labels[q]), confident=score > cfg.fg_threshold)
        if slot is None:
            if score <= cfg.fg_threshold:
                continue  # too weak to start a track
            if not f.free_slots():
                break
            slot = f.allocate()
        f.show(slot, mask, score, q)
        kept.append(i)


def lost_track(f: Frame, mask: Tensor, label: int, confident: bool) -> int | None:
    """The track unseen this frame that a new detection continues: one whose box centre was
    last seen near this one's (``reid_distance``; the nearest wins). Failing that, a
    ``confident`` detection continues the lost track it looks like, wherever it is
    (``reid_look``); and a prompted object away for longer than ``max_missing`` may come
    back anywhere: a confident detection of its class continues it (nearest first)."""
    cfg, s = f.cfg, f.state
    if cfg.reid_distance <= 0:
        return None
    lost = f.lost_slots()
    if not lost:
        return None
    last = s.slot_box[lost]
    dist = (box_centres(last) - box_centres(mask_boxes(mask[None]))).norm(dim=1)
    reach = cfg.reid_distance * box_sizes(last)
    best = int(torch.argmin(dist))
    if float(dist[best]) <= float(reach[best]):
        return lost[best]
    if not confident:
        return None
    if f.by_look:
        look = torch.cdist(f.look.of(mask[None]), s.slot_appearance[lost])[0]
        nearest = int(torch.argmin(look))
        if float(look[nearest]) <= cfg.reid_look:
            return lost[nearest]
    gone = [
        i
        for i in range(len(lost))
        if int(s.slot_object_id[lost[i]]) >= 0
        and int(s.slot_missing[lost[i]]) > cfg.max_missing
        and int(s.slot_label[lost[i]]) == label
    ]
    return lost[min(gone, key=lambda i: (float(dist[i]), lost[i]))] if gone else None
