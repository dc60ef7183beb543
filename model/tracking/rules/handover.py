"""A lost prompted object takes over the young track that found it (``prompted_handover``)."""

from __future__ import annotations

import torch

from ausm_stream.model.tracking.masks import box_centres, mask_boxes
from ausm_stream.model.tracking.slots import Frame, absorb


def hand_over_prompted(f: Frame) -> None:
    """A prompted object whose track lost it is often found again by a detection that starts
    an unprompted track, one frame or many later, while the prompted track's own ID query
    stays lost. Such a young unprompted track of the prompted track's class is taken over:
    it carries the prompted object's identity from this frame on, and the prompted track's
    old slot returns to the pool. Young: seen for no more frames than the prompted track has
    been unseen (``slot_age``), so an unprompted track that was there before the object was
    lost is never taken. The nearest such track to where the object was last seen wins,
    wherever it is: in a stream whose objects the user prompted, a new track of a lost
    object's class is most often that object (measured on 240-frame videos: the model card,
    "Long streams")."""
    if not f.cfg.prompted_handover:
        return
    s = f.state
    lost = [i for i in f.lost_slots() if int(s.slot_object_id[i]) >= 0]
    # The longest-lost first: it has the least chance of its own query finding it again.
    for p in sorted(lost, key=lambda i: (-int(s.slot_missing[i]), i)):
        label = int(s.slot_class_evidence[p].argmax())
        missing = int(s.slot_missing[p])
        young = [
            c
            for c in sorted(f.emitted)
            if int(s.slot_object_id[c]) < 0
            and int(s.slot_age[c]) <= missing
            and int(f.labels[f.emitted[c][2]]) == label
        ]
        if not young:
            continue
        boxes = mask_boxes(torch.stack([f.emitted[c][0] for c in young]))
        dist = (box_centres(boxes) - box_centres(s.slot_box[p][None])).norm(dim=1)
        absorb(f, heir=young[int(torch.argmin(dist))], slot=p, take_name=True)
