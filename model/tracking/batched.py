"""``update_batch``: every stream of a step through the tracker at once, with a constant
number of reads from the device, whatever the number of streams.

:func:`~ausm_stream.model.tracking.update.update_stream` is the reference: one stream at a
time, its rules written for reading, each reading tensor values on the host as it decides
(about 45 reads per stream and frame: on a GPU, each is a wait for the device). Most
frames of most streams change nothing but masks, looks and counters: no track starts,
ends, repeats another, trades its identity or takes a prompt. This module decides, for all
streams together, which frames are such **quiet** frames, and does their bookkeeping in
batched tensor operations; a stream whose frame holds an **event** goes through
``update_stream`` itself, from its untouched state. A quiet frame's outputs are the
reference's bit for bit (the same operations on the same numbers), so which path a frame
took never shows, and a test holds the two paths equal on crafted events and whole videos.

Decided here, for all streams at once: each track's mask, the repeats that are hidden,
the jumps, the missing counts; the detections, greedily in score order, one rank at a
time for every stream (de-duplication, a lost track continued near where it was or a
prompted object found anywhere, a fresh slot drawn by the same hash as ``sample_slot``);
looks and history. An **event**, for which the stream takes the reference rules, is what
remains rare: a queued prompt, a repeat merging into its twin (``reid_look``), a retired
track, a confident detection that only a look could place (far from every lost track,
with looks on), a hand-over of a lost prompted object (``prompted_handover``), a trade of
identities (``appearance_margin``). Each is checked as the rule itself decides, so a frame
without one is exactly one where the reference would make none of these changes.

The device is read three times per step, for all streams at once: which slots are active
and which detections pass the floor (so that only those are upsampled and compared: the
reference's work, not the whole buffer's); which frames hold an event and what the others
show; whether a look would trade an identity, with the class of each shown track. Where a
mask spreads beyond its object (``connected_tracks``) the cut reads once per growth step;
the frames with events read what their rules read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.marker import masks_to_grid
from ausm_stream.model.state import StreamState
from ausm_stream.model.tracking.config import TrackerConfig
from ausm_stream.model.tracking.looks import Look, choose_look
from ausm_stream.model.tracking.masks import (
    box_centres,
    box_sizes,
    mask_boxes,
    mask_iou,
    upsample_masks,
)
from ausm_stream.model.tracking.results import StepResult
from ausm_stream.model.tracking.rules.connected import connected_parts
from ausm_stream.model.tracking.rules.jumps import jump_gates, moved_past
from ausm_stream.model.tracking.rules.looks import learn_looks
from ausm_stream.model.tracking.rules.tracks import history_continuity
from ausm_stream.model.tracking.slots import sample_slots, seed_bits
from ausm_stream.model.tracking.update import soft_history, update_stream


def update_batch(
    cfg: AUSMConfig,
    states: list[StreamState],
    class_logits: Tensor,
    mask_logits: Tensor,
    frames: Tensor | None = None,
    look_features: Tensor | None = None,
    propagated: Tensor | None = None,
) -> list[StepResult]:
    """:func:`update_stream` for every stream of a step: ``class_logits`` (B, Q, C + 1),
    ``mask_logits`` (B, Q, h4, w4), ``frames`` (B, H, W, 3), ``look_features``
    (B, look_dim, h, w) and ``propagated`` (B, N_id, h8, w8), each as ``update_stream``
    takes one stream's; mutates ``states`` and returns their results in order."""
    tc = TrackerConfig.from_model(cfg)

    def inputs(i: int) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        return tuple(None if t is None else t[i] for t in (frames, look_features, propagated))

    # Looks are compared (twin merges, re-identification) where the step came with what
    # they are made of, and reid_look is on (as ``slots.Frame.by_look``).
    has_look = frames is not None if tc.look == "colour" else look_features is not None
    batch = _Batch(tc, states, class_logits, mask_logits, has_look and tc.reid_look > 0)
    # Read 2: which frames hold an event; what the others show.
    quiet = batch.quiet_frames()
    # The looks of the quiet frames' tracks. Read 3: which of them would trade identities,
    # and the class of each shown track, for its name (no classes to read with one class).
    cues = {i: _cue(tc, states[i], *inputs(i)[:2], quiet[i].shown) for i in quiet}
    looks = {i: batch.looks(quiet[i], cues[i]) for i in quiet}
    labels = {i: batch.labels_of(frame) for i, frame in quiet.items()}
    judged = [i for i in quiet if looks[i] is not None and tc.appearance_margin > 0]
    named = len(tc.class_names) > 1
    parts = [_trades(tc, states[i], quiet[i], looks[i]).long()[None] for i in judged]
    parts += list(labels.values()) if named else []
    values = torch.cat(parts).tolist() if parts else []
    names, cursor = {}, len(judged)
    for i, frame in quiet.items():
        k = len(frame.shown) if named else 0
        names[i] = values[cursor : cursor + k] if named else [0] * len(frame.shown)
        cursor += k
    for i, trades in zip(judged, values, strict=False):
        if trades:
            del quiet[i]
    for i, frame in quiet.items():
        batch.write(frame, cues[i], looks[i], inputs(i)[2])
    results: list[StepResult] = []
    for i, state in enumerate(states):
        if i in quiet:
            results.append(batch.result(quiet[i], labels[i], names[i]))
        else:
            results.append(update_stream(cfg, state, class_logits[i], mask_logits[i], *inputs(i)))
    return results


@dataclass
class _Quiet:
    """What one stream shows at a quiet frame, on the host: each shown slot (ascending) with
    the mask that shows it (a track's own, at its padded place, or a detection's, at its
    rank) and the query whose class and score count."""

    index: int
    active: list[int]  # slots active when the frame came in
    shown: list[int] = field(default_factory=list)
    mask_at: dict[int, tuple[str, int]] = field(default_factory=dict)
    query: dict[int, int] = field(default_factory=dict)
    fresh: list[int] = field(default_factory=list)  # slots allocated now, in rank order
    track_ids: dict[int, int] = field(default_factory=dict)


def _cue(
    cfg: TrackerConfig,
    state: StreamState,
    frame: Tensor | None,
    look_features: Tensor | None,
    shown: list[int],
) -> Look | None:
    """The look of a quiet frame's tracks, where one is used (``rules.looks.look_at_visible``)."""
    look = choose_look(cfg, state.slot_appearance.shape[1], frame, look_features)
    if look is None or max(cfg.appearance_margin, cfg.reid_look) <= 0 or not shown:
        return None
    return look


def _trades(cfg: TrackerConfig, state: StreamState, frame: _Quiet, looks: Tensor) -> Tensor:
    """Whether ``rules.looks.trade_identities`` would trade at this quiet frame: some pair's
    summed look distance falls by more than ``appearance_margin`` when it trades. Worked in
    float64 in the rule's own order of operations, as the rule works in Python floats, so
    the verdict is the rule's to the last bit."""
    known = frame.active  # the identities whose look is not new this frame
    seen = [j for j in known if j in frame.mask_at]
    if not seen or len(known) < 2:
        return torch.zeros((), dtype=torch.bool, device=looks.device)
    device = looks.device
    rows = torch.tensor([frame.shown.index(j) for j in seen], device=device)
    dist = torch.cdist(looks[rows], state.slot_appearance[torch.tensor(known, device=device)])
    at = torch.tensor([known.index(j) for j in seen], device=device)
    cost = torch.zeros(len(known), len(known), dtype=torch.float64, device=device)
    cost[at] = dist.double()  # cost[a, b]: track a showing identity b; lost tracks cost nothing
    own = cost.diagonal()
    gain = own[:, None] + own[None, :] - cost - cost.T
    gain.fill_diagonal_(0.0)
    return (gain[at] > cfg.appearance_margin).any()


def _padded(lists: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Ragged per-stream index lists as a (B, P) index tensor (0 where padded) and its
    (B, P) validity, P the longest list (at least 1)."""
    width = max(1, *(len(x) for x in lists))
    index = torch.tensor([x + [0] * (width - len(x)) for x in lists], device=device)
    valid = torch.tensor([[True] * len(x) + [False] * (width - len(x)) for x in lists])
    return index.reshape(len(lists), width), valid.reshape(len(lists), width).to(device)


class _Batch:
    """The network outputs of a step and the states' per-slot fields of the active slots,
    gathered and padded to (B, P) (P: the most active slots of any stream), and the
    detections above the floor, padded to (B, D); what every rule of a quiet frame decides,
    decided for all streams at once. Nothing here writes a state until :meth:`write`."""

    def __init__(
        self,
        cfg: TrackerConfig,
        states: list[StreamState],
        class_logits: Tensor,
        mask_logits: Tensor,
        by_look: bool,
    ) -> None:
        self.cfg, self.states, self.by_look = cfg, states, by_look
        n, b = cfg.n_id, len(states)
        self.device = device = mask_logits.device
        probs = class_logits.float().softmax(-1)
        self.scores = 1.0 - probs[..., -1]  # (B, Q)
        self.class_probs = probs[..., :-1]
        self.query_labels = self.class_probs.argmax(-1)
        self.mask_logits = mask_logits.float()
        self.class_logits, self.raw_mask_logits = class_logits, mask_logits

        def stack(name: str) -> Tensor:
            return torch.stack([getattr(s, name) for s in states])

        # Read 1: the active slots and their track ids; the detections above the floor.
        floor = cfg.fg_threshold
        if cfg.reid_distance > 0:
            floor = min(floor, cfg.reid_threshold)
        self.active_slots = stack("slot_active")
        candidates = self.scores[:, n:] > floor
        flags = torch.cat(
            [self.active_slots.long(), candidates.long(), stack("slot_track_id")], 1
        ).tolist()
        self.active = [[j for j in range(n) if row[j]] for row in flags]
        self.track_ids = [row[n + cfg.n_det :] for row in flags]
        detections = [[n + q for q in range(cfg.n_det) if row[n + q]] for row in flags]
        self.rows = rows = torch.arange(b, device=device)[:, None]
        self.slot, self.valid = _padded(self.active, device)  # (B, P)

        def gather(name: str) -> Tensor:
            return stack(name)[rows, self.slot]

        self.object_id = gather("slot_object_id")
        self.missing = gather("slot_missing")
        self.box = gather("slot_box")
        self.age = gather("slot_age")
        self.label = gather("slot_label")
        self.evidence = gather("slot_class_evidence")
        self.appearance = gather("slot_appearance")
        self.history = gather("slot_masks") * self.valid[..., None, None]
        self.pending = (stack("pending_object_id") >= 0).any(1)
        logits = self.mask_logits[rows, self.slot]  # (B, P, h4, w4)
        p = logits.shape[1]
        if cfg.connected_tracks:
            flat = connected_parts(self.history.flatten(0, 1), logits.flatten(0, 1))
            logits = flat.view_as(logits)
        self.masks = upsample_masks(logits.flatten(0, 1), cfg.image_size).reshape(
            b, p, *cfg.image_size
        )
        self.slot_scores = self.scores[rows, self.slot]
        self.slot_labels = self.query_labels[rows, self.slot]
        self.seen = (self.slot_scores > cfg.track_threshold) & self.masks.flatten(2).any(2)
        self.seen &= self.valid
        # Detections in the order add_detections takes them: highest score first, then query.
        query, valid = _padded(detections, device)  # (B, D)
        key = torch.where(valid, -self.scores[rows, query], torch.inf)
        rank = torch.sort(key, dim=1, stable=True).indices
        self.detection, self.detection_valid = query[rows, rank], valid[rows, rank]
        d = self.detection.shape[1]
        self.detection_masks = upsample_masks(
            self.mask_logits[rows, self.detection].flatten(0, 1), cfg.image_size
        ).reshape(b, d, *cfg.image_size)

    # -- deciding ---------------------------------------------------------------------------
    def quiet_frames(self) -> dict[int, _Quiet]:
        """Runs the rules over the batch, then reads once: the frames without an event, each
        with what it shows."""
        eventful = self.pending | self._repeats()
        self._hide_jumps()
        eventful |= self._retires()
        self.lost = self.valid & ~self.seen
        eventful |= self._detections()
        if self.cfg.prompted_handover:
            eventful |= self._handovers()
        parts = [eventful[:, None], self.seen, self.assigned, self.continued, self.fresh]
        rows = torch.cat([*(t.long() for t in parts), self.detection], 1)
        return self._read_quiet(rows.tolist())

    def _read_quiet(self, rows: list[list[int]]) -> dict[int, _Quiet]:
        p, d = self.seen.shape[1], self.detection.shape[1]
        quiet = {}
        for i, row in enumerate(rows):
            if row[0]:
                continue
            seen, assigned = row[1 : 1 + p], row[1 + p : 1 + p + d]
            continued, fresh = row[1 + p + d : 1 + p + 2 * d], row[1 + p + 2 * d : 1 + p + 3 * d]
            detection = row[1 + p + 3 * d :]
            frame = _Quiet(i, self.active[i])
            for k, slot in enumerate(self.active[i]):
                if seen[k]:
                    frame.mask_at[slot], frame.query[slot] = ("track", k), slot
            next_id = self.states[i].next_track_id
            for r in range(d):
                if continued[r] or fresh[r]:
                    slot = assigned[r]
                    frame.mask_at[slot] = ("detection", r)
                    frame.query[slot] = detection[r]
                if fresh[r]:
                    frame.fresh.append(slot)
                    frame.track_ids[slot] = next_id
                    next_id += 1
            frame.shown = sorted(frame.mask_at)
            for slot in frame.shown:
                frame.track_ids.setdefault(slot, self.track_ids[i][slot])
            quiet[i] = frame
        return quiet

    def _repeats(self) -> Tensor:
        """``rules.tracks.repeats`` and ``hide_repeats`` over the batch: of seen tracks whose
        masks overlap by more than ``dedup_iou``, the one that best continues its history is
        kept, the others are unseen. Returns (B,) the frames where ``merge_twins`` would
        merge a repeat into its twin instead: an event. The greedy choice runs rank by rank
        (at most P steps, all streams at once); IoUs are compared in float64, as the rule
        compares them in Python floats."""
        cfg, seen, rows = self.cfg, self.seen, self.rows
        b, p = seen.shape
        continuity = history_continuity(masks_to_grid(self.masks), self.history)
        key = torch.where(seen, -continuity, torch.inf)
        order = torch.sort(key, dim=1, stable=True).indices  # (B, P): slots by rank
        iou = mask_iou(self.masks, self.masks).double()
        iou = iou[rows[..., None], order[..., None], order[:, None]]
        ranked_seen = seen[rows, order]
        kept = torch.zeros_like(seen)
        twin = torch.full((b, p), -1, dtype=torch.int64, device=self.device)
        at = rows[:, 0]
        for r in range(p):
            overlap = torch.where(kept, iou[:, r], -torch.inf)  # with the tracks kept so far
            best = overlap.argmax(1)  # the first of the largest, in rank order, as max()
            repeat = ranked_seen[:, r] & (overlap[at, best] > cfg.dedup_iou)
            kept[:, r] = ranked_seen[:, r] & ~repeat
            twin[at, order[:, r]] = torch.where(repeat, order[at, best], -1)
        merges = torch.zeros(b, dtype=torch.bool, device=self.device)
        if self.by_look:
            other = twin.clamp(min=0)
            prompted = self.object_id >= 0
            apart = (self.appearance - self.appearance[rows, other]).norm(dim=-1).double()
            alike = apart <= cfg.reid_look
            merges = ((twin >= 0) & alike & ~(prompted & prompted[rows, other])).any(1)
        self.seen = seen & (twin < 0)
        return merges

    def _hide_jumps(self) -> None:
        """``rules.jumps.hide_jumps`` over the batch (it decides nothing else)."""
        cfg = self.cfg
        if max(cfg.prompted_jump_gate, cfg.unprompted_jump_gate) <= 0:
            return
        gate, gated = jump_gates(cfg, self.box, self.object_id, self.missing, self.seen)
        self.seen &= ~(gated & moved_past(self.masks, self.box, gate))

    def _retires(self) -> Tensor:
        """An unseen track past its limit of missing frames is retired (``show_or_miss``)."""
        cfg = self.cfg
        prompted = self.object_id >= 0
        limit = torch.where(prompted, cfg.prompted_max_missing, cfg.max_missing)
        kept = prompted & (cfg.prompted_max_missing == 0)
        return (self.valid & ~self.seen & ~kept & (self.missing + 1 > limit)).any(1)

    def _detections(self) -> Tensor:
        """``rules.detections.add_detections`` over the batch, one rank at a time for every
        stream: a detection large enough and repeating nothing shown or kept continues the
        nearest lost track within ``reid_distance``, or (confident) a prompted object lost
        for longer than ``max_missing`` anywhere, or starts a track in a slot drawn as
        ``sample_slot`` draws it; without a free slot the stream takes no more. Returns (B,)
        the frames where a confident detection far from every lost track could be placed by
        its look: an event."""
        cfg, rows = self.cfg, self.rows
        at = rows[:, 0]
        b, d = self.detection.shape
        masks = self.detection_masks
        scores = self.scores[rows, self.detection]
        labels = self.query_labels[rows, self.detection]
        areas = masks.flatten(2).sum(2)
        shown = self.masks & self.seen[..., None, None]
        over_taken = (mask_iou(masks, shown) > cfg.dedup_iou).any(2)
        over_det = mask_iou(masks, masks) > cfg.dedup_iou
        confident = scores.double() > cfg.fg_threshold
        centres = box_centres(mask_boxes(masks.flatten(0, 1))).reshape(b, d, 2)
        last, reach = box_centres(self.box), cfg.reid_distance * box_sizes(self.box)
        missing = self.missing + 1  # the lost tracks' count at this frame
        free = ~self.active_slots
        seeds = torch.tensor([seed_bits(s.seed) for s in self.states], device=self.device)
        counts = torch.tensor([s.alloc_count for s in self.states], device=self.device)
        lost, event = self.lost.clone(), torch.zeros(b, dtype=torch.bool, device=self.device)
        stopped = torch.zeros_like(event)
        kept = torch.zeros(b, d, dtype=torch.bool, device=self.device)
        self.assigned = torch.full((b, d), -1, dtype=torch.int64, device=self.device)
        self.continued_at = torch.full_like(self.assigned, -1)  # padded place of a lost track
        for r in range(d):
            go = self.detection_valid[:, r] & ~stopped & (areas[:, r] >= cfg.min_mask_area)
            go &= ~over_taken[:, r] & ~(over_det[:, r] & kept).any(1)
            place = torch.full_like(at, -1)
            if cfg.reid_distance > 0:
                dist = (last - centres[:, r, None]).norm(dim=-1)  # (B, P)
                nearest = torch.where(lost, dist, torch.inf).argmin(1)
                near = lost.any(1) & (dist[at, nearest] <= reach[at, nearest])
                far = lost.any(1) & ~near & confident[:, r]
                if self.by_look:
                    event |= go & far
                gone = lost & (self.object_id >= 0) & (missing > cfg.max_missing)
                gone &= self.label == labels[:, r, None]
                found = torch.where(gone, dist, torch.inf).argmin(1)
                place = torch.where(near, nearest, torch.where(far & gone.any(1), found, -1))
            continues = go & (place >= 0)
            lost[at, place.clamp(min=0)] &= ~continues
            starts = go & ~continues & confident[:, r]
            full = ~free.any(1)
            stopped |= starts & full
            starts &= ~full
            slot = sample_slots(free, seeds, counts)
            free[at, slot] &= ~starts
            counts += starts.long()
            self.assigned[:, r] = torch.where(
                continues, self.slot[at, place.clamp(min=0)], torch.where(starts, slot, -1)
            )
            self.continued_at[:, r] = torch.where(continues, place, -1)
            kept[:, r] = continues | starts
        self.continued = self.continued_at >= 0
        self.fresh = kept & ~self.continued
        self.lost = lost
        return event

    def _handovers(self) -> Tensor:
        """A lost prompted track and a shown unprompted one of its class, seen for no more
        frames than it has been missing (``rules.handover``); the shown ones include the
        tracks the detections continued or started."""
        rows = self.rows
        lost = self.lost & (self.object_id >= 0)  # (B, P) the prompted object
        label = self.evidence.argmax(-1)
        place = self.continued_at.clamp(min=0)
        young_tracks = self.seen & (self.object_id < 0)
        young_detections = self.fresh | (self.continued & (self.object_id[rows, place] < 0))
        ages = torch.cat([self.age, torch.where(self.fresh, 0, self.age[rows, place])], 1)
        young = torch.cat([young_tracks, young_detections], 1)
        labels = torch.cat([self.slot_labels, self.query_labels[rows, self.detection]], 1)
        pairs = (
            lost[:, :, None]
            & young[:, None, :]
            & (ages[:, None, :] <= (self.missing + 1)[:, :, None])
            & (labels[:, None, :] == label[:, :, None])
        )
        return pairs.flatten(1).any(1)

    # -- writing a quiet frame --------------------------------------------------------------
    def _masks(self, frame: _Quiet, slots: list[int]) -> Tensor:
        i = frame.index
        picked = [
            self.masks[i, k] if kind == "track" else self.detection_masks[i, k]
            for kind, k in (frame.mask_at[s] for s in slots)
        ]
        if not picked:
            return torch.zeros(0, *self.cfg.image_size, dtype=torch.bool, device=self.device)
        return torch.stack(picked)

    def _index(self, values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.int64, device=self.device)

    def looks(self, frame: _Quiet, cue: Look | None) -> Tensor | None:
        """The looks of the shown tracks, in slot order (``rules.looks.look_at_visible``)."""
        return None if cue is None else cue.of(self._masks(frame, frame.shown))

    def write(
        self, frame: _Quiet, cue: Look | None, looks: Tensor | None, propagated: Tensor | None
    ) -> None:
        """Everything ``update_stream`` writes at a quiet frame: the started tracks, missing
        counts, remembered looks, and the history, boxes, classes and ages of ``_record``."""
        cfg, i = self.cfg, frame.index
        state = self.states[i]
        k = len(frame.active)
        if k:
            missing = torch.where(self.seen[i, :k], 0, self.missing[i, :k] + 1)
            state.slot_missing[self._index(frame.active)] = missing
        if frame.fresh:
            new = self._index(frame.fresh)
            state.slot_active[new] = True
            state.slot_track_id[new] = self._index([frame.track_ids[s] for s in frame.fresh])
            state.slot_object_id[new] = -1
            state.slot_class_evidence[new] = 0.0
            state.slot_age[new] = 0
            state.alloc_count += len(frame.fresh)
            state.next_track_id += len(frame.fresh)
        shown = frame.shown
        idx = self._index(shown)
        state.slot_missing[idx] = 0
        if cue is not None and looks is not None:
            fresh = torch.tensor(
                [s in frame.fresh for s in shown], dtype=torch.bool, device=self.device
            )
            gate = cfg.reid_look if self.by_look else None
            learn_looks(state.slot_appearance, idx, looks, fresh, cue, gate)
        grid = torch.zeros_like(state.slot_masks)
        if shown:
            masks = self._masks(frame, shown)
            queries = self._index([frame.query[s] for s in shown])
            grid[idx] = masks_to_grid(masks).to(grid.dtype)
            state.slot_box[idx] = mask_boxes(masks)
            state.slot_label[idx] = self.query_labels[i, queries]
            state.slot_class_evidence[idx] += self.class_probs[i, queries]
            state.slot_age[idx] += 1
        state.slot_masks = grid
        if propagated is not None:
            state.slot_soft_masks = soft_history(grid, shown, set(), propagated)
        state.frames_seen += 1

    def _order(self, frame: _Quiet) -> list[int]:
        return sorted(frame.shown, key=frame.track_ids.__getitem__)

    def labels_of(self, frame: _Quiet) -> Tensor:
        """The class of each shown track, in track-id order, as ``_record`` will find it
        once the frame is written: the most probability summed over the frames it was
        visible, this one included (a started track's sum starts from zero)."""
        order = self._order(frame)
        evidence = self.states[frame.index].slot_class_evidence[self._index(order)]
        fresh = torch.tensor(
            [s in frame.fresh for s in order], dtype=torch.bool, device=self.device
        )
        evidence = torch.where(fresh[:, None], 0.0, evidence)
        queries = self._index([frame.query[s] for s in order])
        return (evidence + self.class_probs[frame.index, queries]).argmax(-1)

    def result(self, frame: _Quiet, labels: Tensor, names: list[int]) -> StepResult:
        state, i = self.states[frame.index], frame.index
        order = self._order(frame)
        idx = self._index(order)
        return StepResult(
            frame_index=state.frames_seen - 1,
            track_ids=state.slot_track_id[idx],
            labels=labels,
            label_names=[self.cfg.class_names[c] for c in names],
            scores=self.scores[i, self._index([frame.query[s] for s in order])],
            masks=self._masks(frame, order),
            boxes=state.slot_box[idx],
            prompt_object_ids=state.slot_object_id[idx],
            class_logits=self.class_logits[i],
            mask_logits=self.raw_mask_logits[i],
        )
