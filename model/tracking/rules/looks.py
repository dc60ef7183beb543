"""Identities follow their look (``tracking/looks.py``: mean colour or features under the
mask, remembered per identity). Two tracks trade identities when each looks like the other's
object (``appearance_margin``), as after a crossing where the ID queries swapped objects;
two tracks on one object that look alike merge into one identity (``reid_look``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ausm_stream.model.tracking.looks import Look
from ausm_stream.model.tracking.rules.tracks import Tracks
from ausm_stream.model.tracking.slots import Frame, absorb, move_identities

_LOOK_RATE = 0.1
"""How fast a track's remembered look follows what it shows: about the last ten visible
frames count, so lighting may drift while one frame on the wrong object barely moves it."""


@dataclass
class Seen:
    """The looks of the tracks visible at this frame, and the cue they are made of."""

    slots: list[int]
    looks: Tensor  # (k, look_dim)
    look: Look


def merge_twins(f: Frame, tracks: Tracks, twin: Tensor) -> None:
    """Repeats (``rules.tracks.repeats``) whose remembered look lies within ``reid_look`` of their
    twin's are one object tracked twice, not an occluded object whose query jumped onto its
    occluder: the two become one identity in the kept slot (the one whose mask continues its
    history best). The identity that lives on is the prompted one, else the one seen longer
    (``slot_age``; the older track id on a tie), with the class evidence of both. Two
    prompted objects are never merged. The repeat's slot is retired."""
    if not f.by_look:
        return
    s = f.state
    for d in (twin >= 0).nonzero().flatten().tolist():
        a, b = tracks.slots[d], tracks.slots[int(twin[d])]  # a repeats b; b's slot stays
        prompted_a, prompted_b = int(s.slot_object_id[a]) >= 0, int(s.slot_object_id[b]) >= 0
        alike = float((s.slot_appearance[a] - s.slot_appearance[b]).norm()) <= f.cfg.reid_look
        if not alike or (prompted_a and prompted_b):
            continue
        age_a, age_b = (int(s.slot_age[i]) for i in (a, b))
        older_a = (age_a, -int(s.slot_track_id[a])) > (age_b, -int(s.slot_track_id[b]))
        absorb(f, heir=b, slot=a, take_name=prompted_a or (not prompted_b and older_a))


def look_at_visible(f: Frame) -> Seen | None:
    """The looks of the visible tracks, where this step has a look and a rule uses it."""
    slots, masks = f.visible_masks()
    if f.look is None or max(f.cfg.appearance_margin, f.cfg.reid_look) <= 0 or not slots:
        return None
    return Seen(slots, f.look.of(masks), f.look)


def trade_identities(f: Frame, seen: Seen | None) -> None:
    """Identities follow the look of their objects. Where two objects cross, their ID
    queries often end on each other's object, and each then follows the wrong one for the
    rest of the stream: the masks are right, the names swapped (for a prompted object, the
    user's object id). A visible track whose look fits another identity (of a visible or a
    lost track) better than its own, the pair's summed look distance falling by more than
    ``appearance_margin``, trades identities with it; each slot keeps its mask, query and
    history. The largest gain first, until none is left; each trade lowers the summed
    distance, so it ends. Identities whose look starts this frame (new tracks, prompts) are
    left as they are."""
    if seen is None or f.cfg.appearance_margin <= 0:
        return
    s = f.state
    known = [i for i in f.active_slots() if i not in f.fresh_look]
    shown = [seen.slots.index(i) for i in known if i in f.emitted]
    if not shown or len(known) < 2:
        return
    # dist[a][b]: how far visible track a's look is from identity b's (one host copy).
    dist = torch.cdist(seen.looks[shown], s.slot_appearance[known]).tolist()
    row = {known.index(seen.slots[k]): r for k, r in zip(shown, dist, strict=True)}

    def cost(a: int, b: int) -> float:  # track a showing identity b; lost tracks cost nothing
        return row[a][b] if a in row else 0.0

    held = list(range(len(known)))  # held[a]: the identity slot known[a] now carries
    for _ in range(len(known) ** 2):
        best, pair = f.cfg.appearance_margin, None
        for a in row:
            for b in range(len(known)):
                if b == a:
                    continue
                keep = cost(a, held[a]) + cost(b, held[b])
                gain = keep - cost(a, held[b]) - cost(b, held[a])
                if gain > best:
                    best, pair = gain, (a, b)
        if pair is None:
            break
        a, b = pair
        held[a], held[b] = held[b], held[a]
    moved = [i for i, h in enumerate(held) if h != i]
    if moved:
        move_identities(f, [known[held[i]] for i in moved], [known[i] for i in moved])


def remember_looks(f: Frame, seen: Seen | None) -> None:
    """Each visible track's remembered look moves ``_LOOK_RATE`` towards this frame's,
    unless this frame's lies further than ``reid_look`` from it (the mask shows something
    else: a neighbour, the background); a track whose look starts now takes this frame's
    look as it is."""
    if seen is None:
        return
    idx = torch.tensor(seen.slots, device=f.device)
    fresh = torch.tensor([i in f.fresh_look for i in seen.slots], device=f.device)
    gate = f.cfg.reid_look if f.by_look else None
    learn_looks(f.state.slot_appearance, idx, seen.looks, fresh, seen.look, gate)


def learn_looks(
    remembered: Tensor, idx: Tensor, looks: Tensor, fresh: Tensor, look: Look, gate: float | None
) -> None:
    """``remembered[idx]`` (the identities' looks) move ``_LOOK_RATE`` towards ``looks``;
    ``fresh`` ones take theirs as they are; with a ``gate``, a look further than it from
    the remembered one leaves that as it is."""
    rate = torch.where(fresh, 1.0, _LOOK_RATE)
    if gate is not None:
        off = (looks - remembered[idx]).norm(dim=1) > gate
        rate = torch.where(off & ~fresh, 0.0, rate)
    remembered[idx] = look.follow(remembered[idx], looks, rate)
