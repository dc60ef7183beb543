"""Track bookkeeping after each network step (MODEL.md section 3.5 and the streaming choices).

Kept apart from the ``nn.Module``s so the network stays pure tensors. Per stream and frame:

1. **Tracks** (active ID slots): visible when their foreground score exceeds
   ``track_threshold`` and their mask is non-empty. A track's mask keeps only the parts
   connected to the cells its object covered at the frame before (``connected_tracks``).
   A track unseen for more than ``max_missing`` consecutive frames is retired and its ID
   vector returns to the pool. While unseen it stays in A with an empty mask, so its ID
   query can find the object again after an occlusion. A prompted object's track is not
   retired (``prompted_max_missing``, default never): whoever prompted it expects it found
   again when it comes back into view.
2. **Prompts** queued by ``add_prompt`` for this frame: a prompt for an object id the stream
   already tracks replaces that track's mask; a prompt whose mask overlaps an unprompted
   visible track by more than ``dedup_iou`` adopts that track (same track id, now carrying
   the object id); otherwise it starts a new track. On this frame the prompted track's mask
   is the prompt itself (score 1). This matches training: a prompt is a perfect detection at
   its frame, and the object is tracked from the next frame on.
3. **Detections** (``filter_fg``): detection queries with score above ``fg_threshold`` and at
   least ``min_mask_area`` pixels, greedily de-duplicated (highest score first) against each
   other, visible tracks and prompts by mask IoU, each continue a track unseen this frame
   when one was last seen close by (``reid_distance``: an object back from behind another
   keeps its id) or, if confident, when one looks like it (``reid_look``), else get a fresh
   slot from the unused part of the ID buffer while there is room. Weaker detections (above
   ``reid_threshold``) may continue a lost track but never start one (ByteTrack's low-score
   association). A prompted object away for longer than ``max_missing`` is continued by a
   confident detection of its class anywhere in the frame: it may come back through
   another edge.
4. **Long streams**: a track whose mask leaps more than ``prompted_jump_gate`` (prompted
   tracks) or ``unprompted_jump_gate`` (the rest) of its box size in one frame has jumped
   onto a neighbour and is unseen there; a lost prompted object takes over a young
   unprompted track of its class that found it (``prompted_handover``).
5. **Identities follow their look** (the mean colour under the mask, remembered per
   identity): two tracks trade identities when each looks like the other's object
   (``appearance_margin``), as after a crossing where the ID queries swapped objects; two
   tracks on one object that look alike merge into one identity (``reid_look``).

A track has one class, not one per frame: the class with the most probability summed over
the frames the track was visible (as video-instance evaluations score a track by its mean
class probability). Early in a track it may change as evidence comes in; then it settles
instead of flickering whenever one frame's class head hesitates, so a query for "tracks of
class X" gets whole tracks. Scores stay per frame. Re-identifying a detection near where a
track was lost ignores classes (one frame's class head may disagree); bringing a prompted
object back anywhere in the frame compares the detection's class with the one the track
showed when last seen.

Track ids shown to users are a per-stream counter from 1, never reused; they are separate
from the buffer slot. Slots are drawn by :func:`sample_slot`, a pure function of
(stream seed, allocation count), so a replayed stream reproduces its ids bit for bit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.marker import masks_to_grid
from ausm_stream.model.state import StreamState

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_slot(free_slots: list[int], seed: int, count: int) -> int:
    """Deterministic draw from the unused ID slots, keyed by (seed, allocation count)."""
    return free_slots[_splitmix64(_splitmix64(seed & _MASK64) ^ count) % len(free_slots)]


@dataclass
class StepResult:
    """The visible tracks of one stream at one frame, ordered by track id.

    ``prompt_object_ids`` is -1 for tracks that were not prompted. ``class_logits`` and
    ``mask_logits`` are the raw network outputs of every query (ID slots first, then the
    detection queries), for analysis and tests.
    """

    frame_index: int
    track_ids: Tensor  # (K,) int64
    labels: Tensor  # (K,) int64, index into the config's class_names
    label_names: list[str]
    scores: Tensor  # (K,) float32
    masks: Tensor  # (K, H, W) bool
    boxes: Tensor  # (K, 4) float32: x0, y0, x1, y1 pixel edges of the masks
    prompt_object_ids: Tensor  # (K,) int64
    class_logits: Tensor  # (Q, C + 1)
    mask_logits: Tensor  # (Q, h4, w4)

    def __len__(self) -> int:
        return int(self.track_ids.numel())


HOST_FIELDS = ("track_ids", "labels", "prompt_object_ids", "scores", "boxes", "masks")
"""The per-track tensors of a :class:`StepResult` (the raw logits stay where they are), the
widest types first: packed in this order, every field's bytes start aligned for its type."""


def results_to_host(results: list[StepResult]) -> list[StepResult]:
    """A batch's results with their track tensors on the CPU, in one transfer for the whole
    batch (on a GPU every copy waits for the device): each field of every stream is
    concatenated, all fields are packed as bytes into one buffer, copied once, and cut and
    viewed back as their types. The raw ``class_logits`` and ``mask_logits`` are not copied."""
    lengths = [len(r) for r in results]
    fields = [torch.cat([getattr(r, name) for r in results]) for name in HOST_FIELDS]
    packed = torch.cat([f.contiguous().flatten().view(torch.uint8) for f in fields]).cpu()
    sizes = [f.numel() * f.element_size() for f in fields]
    host = {
        name: raw.view(f.dtype).reshape(f.shape).split(lengths)
        for name, f, raw in zip(HOST_FIELDS, fields, packed.split(sizes), strict=True)
    }
    return [
        dataclasses.replace(r, **{name: host[name][i] for name in HOST_FIELDS})
        for i, r in enumerate(results)
    ]


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of bool masks a (m, H, W) and b (n, H, W) -> (m, n)."""
    af, bf = a.flatten(1).float(), b.flatten(1).float()
    inter = af @ bf.T
    union = af.sum(1, keepdim=True) + bf.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def upsample_masks(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Mask logits (k, h4, w4) -> bool masks (k, H, W) at the input size."""
    if mask_logits.shape[0] == 0:
        return torch.zeros(0, *size, dtype=torch.bool, device=mask_logits.device)
    up = F.interpolate(mask_logits[:, None], size=size, mode="bilinear", align_corners=False)
    return up[:, 0] > 0


class _Frame:
    """Working set for one stream's update: the emitted tracks are collected per slot."""

    def __init__(
        self,
        cfg: AUSMConfig,
        state: StreamState,
        class_logits: Tensor,
        mask_logits: Tensor,
        frame: Tensor | None,
    ) -> None:
        self.cfg, self.state, self.frame = cfg, state, frame
        probs = class_logits.float().softmax(-1)
        self.scores = 1.0 - probs[:, -1]
        self.class_probs = probs[:, :-1]
        self.labels = self.class_probs.argmax(-1)
        self.mask_logits = mask_logits.float()  # autocast leaves them in half precision
        self.device = mask_logits.device  # the state's and the network's: every tensor's here
        # slot -> (mask, score, query whose class probabilities count as this frame's evidence)
        self.emitted: dict[int, tuple[Tensor, float, int]] = {}
        # slots whose identity starts its look this frame (new tracks, prompts)
        self.fresh_look: set[int] = set()
        # looks are remembered (and compared) only where the frame comes with the outputs
        self.by_look = frame is not None and cfg.reid_look > 0

    def visible_masks(self) -> tuple[list[int], Tensor]:
        slots = sorted(self.emitted)
        if not slots:
            empty = torch.zeros(0, *self.cfg.image_size, dtype=torch.bool, device=self.device)
            return [], empty
        return slots, torch.stack([self.emitted[s][0] for s in slots])

    def free_slots(self) -> list[int]:
        return [i for i, a in enumerate(self.state.slot_active.tolist()) if not a]

    def allocate(self, object_id: int = -1) -> int:
        s = self.state
        slot = sample_slot(self.free_slots(), s.seed, s.alloc_count)
        s.alloc_count += 1
        s.slot_active[slot] = True
        s.slot_track_id[slot] = s.next_track_id
        s.next_track_id += 1
        s.slot_object_id[slot] = object_id
        s.slot_missing[slot] = 0
        s.slot_class_evidence[slot] = 0.0
        self.fresh_look.add(slot)
        return slot

    def retire(self, slot: int) -> None:
        s = self.state
        s.slot_active[slot] = False
        s.slot_track_id[slot] = -1
        s.slot_object_id[slot] = -1
        s.slot_missing[slot] = 0
        s.slot_label[slot] = -1
        s.slot_class_evidence[slot] = 0.0
        s.slot_appearance[slot] = 0.0
        self.emitted.pop(slot, None)


def _update_tracks(f: _Frame) -> None:
    cfg, s = f.cfg, f.state
    slots = s.slot_active.nonzero().flatten().tolist()
    logits = f.mask_logits[slots]
    if cfg.connected_tracks:
        logits = _connected_parts(s.slot_masks[slots], logits)
    masks = upsample_masks(logits, cfg.image_size)
    seen = (f.scores[slots] > cfg.track_threshold) & masks.flatten(1).any(1)
    twin = _duplicates(s, masks, seen, cfg.dedup_iou)
    merged = _merge_twins(f, slots, twin) if f.by_look else set()
    seen &= twin < 0
    seen &= ~_jumped(cfg, s, slots, masks, seen)
    for slot, mask, visible in zip(slots, masks, seen.tolist(), strict=True):
        if slot in merged:
            continue  # its identity lives on in its twin's slot
        score = float(f.scores[slot])
        if visible:
            s.slot_missing[slot] = 0
            f.emitted[slot] = (mask, score, slot)
        else:
            s.slot_missing[slot] += 1
            prompted = int(s.slot_object_id[slot]) >= 0
            if prompted and cfg.prompted_max_missing == 0:
                continue  # a prompted object is kept until it is found again
            limit = cfg.prompted_max_missing if prompted else cfg.max_missing
            if int(s.slot_missing[slot]) > limit:
                f.retire(slot)


_DROPPED = -20.0
"""Logit given to the parts of a track's mask that ``_connected_parts`` drops."""


def _connected_parts(history: Tensor, logits: Tensor) -> Tensor:
    """``logits`` (k, h, w) with every connected part of each mask (logit > 0, 8-connected)
    that touches none of the 1/8-grid cells its track covered at the frame before
    (``history``, (k, h8, w8)) pushed to background. Objects move a few pixels a frame, well
    within a cell; a part away from where the object was belongs to another object that
    the ID query also lit up (seen on long streams: a track's mask spreads to a second object
    for a frame or two, and the track then follows that one). A track without a history
    (unseen at the frame before), or whose mask touches none of it, keeps its mask whole:
    that is a jump, for ``_jumped`` and the detections. (Growing the history by a cell for
    motion was measured too: lower AP on 240-frame ``val`` videos, model card.)"""
    if logits.shape[0] == 0:
        return logits
    fg = logits > 0
    near = F.interpolate((history > 0).float()[:, None], size=fg.shape[-2:], mode="nearest")
    region = fg & (near[:, 0] > 0)
    anchored = region.flatten(1).any(1)
    if not bool((fg & ~region & anchored[:, None, None]).any()):
        return logits  # every mask lies within its cells: nothing to drop, no growth to run
    for _ in range(fg.shape[-2] * fg.shape[-1]):  # geodesic growth inside the mask
        grown = (F.max_pool2d(region.float()[:, None], 3, stride=1, padding=1)[:, 0] > 0) & fg
        if torch.equal(grown, region):
            break
        region = grown
    dropped = fg & ~region & anchored[:, None, None]
    return torch.where(dropped, torch.full_like(logits, _DROPPED), logits)


def _centres(boxes: Tensor) -> Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _jumped(
    cfg: AUSMConfig, s: StreamState, slots: list[int], masks: Tensor, seen: Tensor
) -> Tensor:
    """Tracks seen at the frame before (and ``seen`` now) whose mask centre moved more than
    their gate (``prompted_jump_gate`` for prompted tracks, ``unprompted_jump_gate`` for the
    rest) times their last box size since: no object here moves that fast (a few pixels a
    frame), so the ID query has jumped onto a neighbour at a crossing. Such a track is unseen
    at this frame rather than shown on the wrong object, which would also feed the
    neighbour's mask back as its history and keep it there; the object is found again by its
    own query or by a detection (``reid_distance``, ``prompted_handover``). (k,) bool over
    ``slots``."""
    jumped = torch.zeros(len(slots), dtype=torch.bool, device=masks.device)
    if max(cfg.prompted_jump_gate, cfg.unprompted_jump_gate) <= 0 or not slots:
        return jumped
    idx = torch.tensor(slots, device=masks.device)
    last = s.slot_box[idx]
    gate = torch.where(
        s.slot_object_id[idx] >= 0, cfg.prompted_jump_gate, cfg.unprompted_jump_gate
    ).to(last.dtype)
    gated = (gate > 0) & (s.slot_missing[idx] == 0) & (last[:, 2:] > last[:, :2]).all(1) & seen
    if not bool(gated.any()):
        return jumped
    shift = (_centres(mask_boxes(masks)) - _centres(last)).norm(dim=1)
    size = (last[:, 2:] - last[:, :2]).amax(1)
    return gated & (shift > gate * size)


def _duplicates(s: StreamState, masks: Tensor, seen: Tensor, max_iou: float) -> Tensor:
    """Tracks whose mask repeats another track's (IoU > ``max_iou``): all but the one whose
    mask best continues its own history mask. When an object hides behind another, its query
    tends to jump onto the occluder; this keeps the occluder's track and leaves the hidden
    one unseen (kept, empty history) until it comes back. (k,) int64 over the active slots:
    for each repeat, the index of the kept track it repeats (the most overlapping); -1 for
    the rest."""
    twin = torch.full(seen.shape, -1, dtype=torch.int64, device=seen.device)
    idx = seen.nonzero().flatten().tolist()
    if len(idx) < 2:
        return twin
    slots = s.slot_active.nonzero().flatten()[idx]
    now, before = masks_to_grid(masks[idx]), s.slot_masks[slots]
    continuity = torch.minimum(now, before).sum((1, 2)) / torch.maximum(now, before).sum(
        (1, 2)
    ).clamp(min=1e-6)
    order = sorted(range(len(idx)), key=lambda i: (-float(continuity[i]), int(slots[i])))
    ious = mask_iou(masks[idx], masks[idx])
    kept: list[int] = []
    for i in order:
        j = max(kept, key=lambda j: float(ious[i, j]), default=None)
        if j is not None and float(ious[i, j]) > max_iou:
            twin[idx[i]] = idx[j]
        else:
            kept.append(i)
    return twin


def _merge_twins(f: _Frame, slots: list[int], twin: Tensor) -> set[int]:
    """Repeats (``_duplicates``) whose remembered look lies within ``reid_look`` of their
    twin's are one object tracked twice, not an occluded object whose query jumped onto its
    occluder: the two become one identity in the kept slot (the one whose mask continues its
    history best). The identity that lives on is the prompted one, else the one seen longer
    (more class evidence; the older track id on a tie), with the class evidence of both.
    Two prompted objects are never merged. Returns the slots freed."""
    s, merged = f.state, set()
    for d in (twin >= 0).nonzero().flatten().tolist():
        a, b = slots[d], slots[int(twin[d])]  # a repeats b; b's slot stays
        prompted_a, prompted_b = int(s.slot_object_id[a]) >= 0, int(s.slot_object_id[b]) >= 0
        alike = float((s.slot_appearance[a] - s.slot_appearance[b]).norm()) <= f.cfg.reid_look
        if not alike or (prompted_a and prompted_b):
            continue
        seen_a, seen_b = (float(s.slot_class_evidence[i].sum()) for i in (a, b))
        older_a = (seen_a, -int(s.slot_track_id[a])) > (seen_b, -int(s.slot_track_id[b]))
        _inherit(f, b, a, name=prompted_a or (not prompted_b and older_a))
        merged.add(a)
    return merged


_NAME = ("slot_track_id", "slot_object_id", "slot_appearance")
"""What names an identity (the user's track id and object id) and how it looks; its class
evidence goes with it too, but is summed when two tracks become one."""


def _inherit(f: _Frame, heir: int, slot: int, name: bool) -> None:
    """``heir`` absorbs ``slot``'s track, which is retired: their class evidence adds up, and
    with ``name`` the heir carries ``slot``'s identity (``_NAME``) from now on."""
    s = f.state
    if name:
        for field in _NAME:
            getattr(s, field)[heir] = getattr(s, field)[slot].clone()
    s.slot_class_evidence[heir] += s.slot_class_evidence[slot]
    f.retire(slot)


def _apply_prompts(f: _Frame) -> list[Tensor]:
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
        s.slot_missing[slot] = 0
        f.fresh_look.add(slot)  # a prompt says what the object looks like now
        small = F.avg_pool2d(mask[None, None].float(), 4)[0] > 0.5
        best = int(mask_iou(small, query_masks).argmax())
        f.emitted[slot] = (mask, 1.0, best)
        installed.append(mask)
        s.pending_object_id[p] = -1
        s.pending_masks[p] = False
    return installed


def _eviction_victim(f: _Frame) -> int:
    """The unprompted track a prompt displaces when the ID buffer is full: the one unseen
    longest, else the visible one with the lowest score (``add_prompt`` guarantees one)."""
    s = f.state
    unprompted = [
        i for i in s.slot_active.nonzero().flatten().tolist() if int(s.slot_object_id[i]) < 0
    ]
    return min(
        unprompted,
        key=lambda i: (-int(s.slot_missing[i]), f.emitted[i][1] if i in f.emitted else 0.0, i),
    )


def _adoptable(f: _Frame, mask: Tensor) -> int | None:
    """The unprompted visible track this prompt points at, if its mask overlaps enough."""
    candidates = [slot for slot in sorted(f.emitted) if int(f.state.slot_object_id[slot]) < 0]
    if not candidates:
        return None
    ious = mask_iou(mask[None], torch.stack([f.emitted[c][0] for c in candidates]))[0]
    best = int(ious.argmax())
    return candidates[best] if float(ious[best]) > f.cfg.dedup_iou else None


def _add_detections(f: _Frame, prompt_masks: list[Tensor]) -> None:
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
        label = int(f.labels[q])
        slot = _lost_track(f, mask, label, confident=float(f.scores[q]) > cfg.fg_threshold)
        if slot is None:
            if float(f.scores[q]) <= cfg.fg_threshold:
                continue  # too weak to start a track
            if not f.free_slots():
                break
            slot = f.allocate()
        f.state.slot_missing[slot] = 0
        f.emitted[slot] = (mask, float(f.scores[q]), q)
        kept.append(i)


def mask_boxes(masks: Tensor) -> Tensor:
    """x0, y0, x1, y1 (pixel edges) of non-empty bool masks (k, H, W) -> (k, 4) float32."""
    rows, cols = masks.any(2), masks.any(1)  # (k, H), (k, W)

    def first_last(hits: Tensor) -> tuple[Tensor, Tensor]:
        n = hits.shape[1]
        return hits.int().argmax(1), n - hits.flip(1).int().argmax(1)

    (y0, y1), (x0, x1) = first_last(rows), first_last(cols)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def _lost_track(f: _Frame, mask: Tensor, label: int, confident: bool) -> int | None:
    """The track unseen this frame that a new detection continues: one whose box centre was
    last seen near this one's (``reid_distance``; the nearest wins). Failing that, a
    ``confident`` detection continues the lost track it looks like, wherever it is
    (``reid_look``); and a prompted object away for longer than ``max_missing`` may come
    back anywhere: a confident detection of its class continues it (nearest first)."""
    cfg, s = f.cfg, f.state
    if cfg.reid_distance <= 0:
        return None
    lost = [i for i in s.slot_active.nonzero().flatten().tolist() if i not in f.emitted]
    if not lost:
        return None
    last = s.slot_box[lost]
    dist = (_centres(last) - _centres(mask_boxes(mask[None]))).norm(dim=1)
    reach = cfg.reid_distance * (last[:, 2:] - last[:, :2]).amax(dim=1)
    best = int(torch.argmin(dist))
    if float(dist[best]) <= float(reach[best]):
        return lost[best]
    if not confident:
        return None
    if f.by_look:
        look = torch.cdist(_colours(mask[None], f.frame), s.slot_appearance[lost])[0]
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


def _hand_over_prompted(f: _Frame) -> None:
    """A prompted object whose track lost it is often found again by a detection that starts
    an unprompted track, one frame or many later, while the prompted track's own ID query
    stays lost. Such a young unprompted track of the prompted track's class is taken over:
    it carries the prompted object's track id and object id from this frame on, and the
    prompted track's old slot returns to the pool. Young: seen for no more frames than the
    prompted track has been unseen (its summed class evidence, at most one per visible
    frame, measures that without a counter), so an unprompted track that was there before
    the object was lost is never taken. The nearest such track to where the object was last
    seen wins, wherever it is: in a stream whose objects the user prompted, a new track of
    a lost object's class is most often that object (measured on 240-frame videos: the
    model card, "Long streams")."""
    s = f.state
    lost = [
        i
        for i in s.slot_active.nonzero().flatten().tolist()
        if i not in f.emitted and int(s.slot_object_id[i]) >= 0
    ]
    if not lost:
        return
    # The longest-lost first: it has the least chance of its own query finding it again.
    for p in sorted(lost, key=lambda i: (-int(s.slot_missing[i]), i)):
        label = int(s.slot_class_evidence[p].argmax())
        missing = int(s.slot_missing[p])
        young = [
            c
            for c in sorted(f.emitted)
            if int(s.slot_object_id[c]) < 0
            and float(s.slot_class_evidence[c].sum()) <= missing
            and int(f.labels[f.emitted[c][2]]) == label
        ]
        if not young:
            continue
        boxes = mask_boxes(torch.stack([f.emitted[c][0] for c in young]))
        last = s.slot_box[p]
        dist = (_centres(boxes) - _centres(last[None])).norm(dim=1)
        c = young[int(torch.argmin(dist))]
        f.fresh_look.discard(c)
        _inherit(f, c, p, name=True)


_LOOK_RATE = 0.1
"""How fast a track's remembered colour follows what it shows: about the last ten visible
frames count, so lighting may drift while one frame on the wrong object barely moves it."""


def _colours(masks: Tensor, frame: Tensor) -> Tensor:
    """Mean RGB in [0, 1] of ``frame`` (H, W, 3) uint8 under each non-empty mask (k, H, W)."""
    weights = masks.flatten(1).float()
    sums = weights @ frame.to(weights.device).flatten(0, 1).float()
    return sums / (255.0 * weights.sum(1, keepdim=True).clamp(min=1.0))


def _trade_identities(f: _Frame, slots: list[int], colours: Tensor) -> None:
    """Identities follow the look of their objects. ``slots`` are the visible tracks,
    ``colours`` their mean colours this frame. Where two objects cross, their ID queries
    often end on each other's object, and each then follows the wrong one for the rest of
    the stream: the masks are right, the names swapped (for a prompted object, the user's
    object id). A visible track whose colour fits another identity (of a visible or a lost
    track) better than its own, the pair's summed colour distance falling by more than
    ``appearance_margin``, trades identities with it: track id, object id, class evidence
    and remembered colour move; each slot keeps its mask, query and history. The largest
    gain first, until none is left; each trade lowers the summed distance, so it ends.
    Identities whose look starts this frame (new tracks, prompts) are left as they are."""
    s = f.state
    known = [i for i in s.slot_active.nonzero().flatten().tolist() if i not in f.fresh_look]
    seen = [slots.index(i) for i in known if i in f.emitted]
    if not seen or len(known) < 2:
        return
    # dist[a][b]: how far visible track a's colour is from identity b's (one host copy).
    dist = torch.cdist(colours[seen], s.slot_appearance[known]).tolist()
    row = {known.index(slots[k]): r for k, r in zip(seen, dist, strict=True)}

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
    if not moved:
        return
    src = torch.tensor([known[held[i]] for i in moved], device=f.device)
    dst = torch.tensor([known[i] for i in moved], device=f.device)
    for name in (*_NAME, "slot_class_evidence"):
        table = getattr(s, name)
        table[dst] = table[src].clone()


def _remember_looks(f: _Frame, slots: list[int], colours: Tensor) -> None:
    """Each visible track's remembered colour moves ``_LOOK_RATE`` towards this frame's,
    unless this frame's lies further than ``reid_look`` from it (the mask shows something
    else); a track whose look starts now takes this frame's colour as it is."""
    s = f.state
    idx = torch.tensor(slots, device=f.device)
    fresh = torch.tensor([i in f.fresh_look for i in slots], device=f.device)
    rate = torch.where(fresh, 1.0, _LOOK_RATE)
    if f.by_look:
        off = (colours - s.slot_appearance[idx]).norm(dim=1) > f.cfg.reid_look
        rate = torch.where(off & ~fresh, 0.0, rate)
    s.slot_appearance[idx] = (1 - rate[:, None]) * s.slot_appearance[idx] + rate[:, None] * colours


def update_stream(
    cfg: AUSMConfig,
    state: StreamState,
    class_logits: Tensor,
    mask_logits: Tensor,
    frame: Tensor | None = None,
) -> StepResult:
    """Advance one stream's track table after its network step; mutates ``state``.
    ``frame`` (H, W, 3) uint8, the frame the network saw, gives tracks their look
    (``appearance_margin``, ``reid_look``); without it identities follow the ID queries
    and positions alone."""
    f = _Frame(cfg, state, class_logits, mask_logits, frame)
    _update_tracks(f)
    prompt_masks = _apply_prompts(f)
    _add_detections(f, prompt_masks)
    if cfg.prompted_handover:
        _hand_over_prompted(f)
    slots, masks = f.visible_masks()
    if frame is not None and max(cfg.appearance_margin, cfg.reid_look) > 0 and slots:
        colours = _colours(masks, frame)
        if cfg.appearance_margin > 0:
            _trade_identities(f, slots, colours)
        _remember_looks(f, slots, colours)

    grid = torch.zeros_like(state.slot_masks)
    if slots:
        grid[slots] = masks_to_grid(masks).to(grid.dtype)
        state.slot_box[slots] = mask_boxes(masks)
        queries = torch.tensor([f.emitted[i][2] for i in slots], device=f.device)
        state.slot_label[slots] = f.labels[queries]
        state.slot_class_evidence[slots] += f.class_probs[queries]
    state.slot_masks = grid  # M_t: unseen tracks keep an empty mask
    frame_index = state.frames_seen
    state.frames_seen += 1

    # Every tensor of the result stays on the state's device; the worker copies a whole
    # batch's results to the host at once (results_to_host).
    idx = torch.tensor(slots, dtype=torch.int64, device=f.device)
    order = torch.argsort(state.slot_track_id[idx])
    idx = idx[order]
    labels = state.slot_class_evidence[idx].argmax(-1)
    return StepResult(
        frame_index=frame_index,
        track_ids=state.slot_track_id[idx],
        labels=labels,
        label_names=[cfg.class_names[i] for i in labels.tolist()],
        scores=torch.tensor(
            [f.emitted[s][1] for s in idx.tolist()], dtype=torch.float32, device=f.device
        ),
        masks=masks[order],
        boxes=state.slot_box[idx],
        prompt_object_ids=state.slot_object_id[idx],
        class_logits=class_logits,
        mask_logits=mask_logits,
    )
