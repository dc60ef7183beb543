"""``update_batch``: every stream of a step through the tracker at once, with a constant
number of reads from the device, whatever the number of streams.

:func:`~ausm_stream.model.tracking.update.update_stream` is the reference: one stream at a
time, its rules written for reading, each reading tensor values on the host as it decides
(about 30 reads per stream and frame: on a GPU, each is a wait for the device). Most
frames of most streams change nothing but masks, looks and counters: no track starts,
ends, repeats another, trades its identity or takes a prompt. This module decides, for all
streams together, which frames are such **quiet** frames, and does their bookkeeping in
batched tensor operations; a stream whose frame holds an **event** goes through
``update_stream`` itself, from its untouched state. A quiet frame's outputs are the
reference's bit for bit (the same operations on the same numbers), so which path a frame
took never shows, and a test holds the two paths equal on crafted events and whole videos.

The device is read four times per step, for all streams at once: which slots are active
and which detections pass the floor (so that only those are upsampled and compared: the
reference's work, not the whole buffer's), which frames are quiet and which tracks they
show, whether a look would trade an identity, and the class of each track (skipped for
one-class models). Where a mask spreads beyond its object (``connected_tracks``) the cut
reads once per growth step; the frames with events read what their rules read.

A frame is an event when any of these may happen (each checked as the rule itself
decides, so a quiet frame is exactly one where the rules would change no identity):
a prompt is queued; a repeat would merge into its twin (``reid_look``; repeats that are
only hidden are decided here); a track is retired;
a detection survives the de-duplication and could start or continue a track; a lost
prompted object could take over a young track (``prompted_handover``); a look would trade
identities (``appearance_margin``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
from ausm_stream.model.tracking.rules.looks import _LOOK_RATE
from ausm_stream.model.tracking.update import update_stream


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
    # Read 2: which frames hold an event, and which tracks the quiet ones show.
    rows = torch.cat([batch.events()[:, None], batch.seen], 1).tolist()
    quiet = [i for i, row in enumerate(rows) if not row[0]]
    # Row i's flags after the first are its padded slots: the active ones first, in order.
    shown = {
        i: [j for j, seen in zip(batch.active[i], rows[i][1:], strict=False) if seen] for i in quiet
    }
    # The looks of the quiet frames' tracks; read 3: which of them would trade identities.
    cues = {i: _cue(tc, states[i], *inputs(i)[:2], shown[i]) for i in quiet}
    looks = {i: batch.looks(i, cues[i], shown[i]) for i in quiet}
    judged = [i for i in quiet if looks[i] is not None and tc.appearance_margin > 0]
    if judged:
        trades = [_trades(tc, states[i], batch.active[i], shown[i], looks[i]) for i in judged]
        trading = {i for i, t in zip(judged, torch.stack(trades).tolist(), strict=True) if t}
        quiet = [i for i in quiet if i not in trading]
    order = {i: sorted(shown[i], key=batch.track_ids[i].__getitem__) for i in quiet}
    for i in quiet:
        batch.write_quiet(i, shown[i], cues[i], looks[i], inputs(i)[2])
    # Read 4: each quiet track's class, for its name (nothing to read with one class).
    labels = {i: batch.labels_of(i, order[i]) for i in quiet}
    if len(tc.class_names) > 1 and quiet:
        names = iter(torch.cat([labels[i] for i in quiet]).tolist())
    else:
        names = iter([0] * sum(len(order[i]) for i in quiet))
    results: list[StepResult] = []
    for i, state in enumerate(states):
        if i in labels:
            picked = [next(names) for _ in order[i]]
            results.append(batch.result(i, order[i], labels[i], picked))
        else:
            results.append(update_stream(cfg, state, class_logits[i], mask_logits[i], *inputs(i)))
    return results


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


def _trades(
    cfg: TrackerConfig, state: StreamState, active: list[int], shown: list[int], looks: Tensor
) -> Tensor:
    """Whether ``rules.looks.trade_identities`` would trade at this quiet frame: some pair's
    summed look distance falls by more than ``appearance_margin`` when it trades. Worked in
    float64 in the rule's own order of operations, as the rule works in Python floats, so
    the verdict is the rule's to the last bit."""
    if len(active) < 2:
        return torch.zeros((), dtype=torch.bool, device=looks.device)
    known = torch.tensor(active, dtype=torch.int64, device=looks.device)
    dist = torch.cdist(looks, state.slot_appearance[known]).double()  # (shown, known)
    rows = torch.tensor([active.index(j) for j in shown], device=looks.device)
    cost = torch.zeros(len(active), len(active), dtype=torch.float64, device=looks.device)
    cost[rows] = dist  # cost[a, b]: track a showing identity b; lost tracks cost nothing
    own = cost.diagonal()
    gain = own[:, None] + own[None, :] - cost - cost.T
    gain.fill_diagonal_(0.0)
    return (gain[rows] > cfg.appearance_margin).any()


def _padded(lists: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Ragged per-stream index lists as a (B, P) index tensor (0 where padded) and its
    (B, P) validity, P the longest list (at least 1)."""
    width = max(1, *(len(x) for x in lists))
    index = torch.tensor([x + [0] * (width - len(x)) for x in lists], device=device)
    valid = torch.tensor([[True] * len(x) + [False] * (width - len(x)) for x in lists])
    return index.reshape(len(lists), width), valid.reshape(len(lists), width).to(device)


class _Batch:
    """The network outputs of a step and the states' per-slot fields of the active slots,
    gathered and padded to (B, P) (P: the most active slots of any stream); what every rule
    of a quiet frame decides, decided for all streams at once. Nothing here writes a state
    until :meth:`write_quiet`."""

    def __init__(
        self,
        cfg: TrackerConfig,
        states: list[StreamState],
        class_logits: Tensor,
        mask_logits: Tensor,
        by_look: bool,
    ) -> None:
        self.cfg, self.states = cfg, states
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
        active, track_id = stack("slot_active"), stack("slot_track_id")
        candidates = self.scores[:, n:] > floor
        flags = torch.cat([active.long(), candidates.long(), track_id], 1).tolist()
        self.active = [[j for j in range(n) if row[j]] for row in flags]
        self.track_ids = [row[n + cfg.n_det :] for row in flags]
        detections = [[n + q for q in range(cfg.n_det) if row[n + q]] for row in flags]
        self.slot, self.valid = _padded(self.active, device)  # (B, P)
        rows = torch.arange(b, device=device)[:, None]

        def gather(name: str) -> Tensor:
            return stack(name)[rows, self.slot]

        self.object_id = gather("slot_object_id")
        self.missing = gather("slot_missing")
        self.box = gather("slot_box")
        self.age = gather("slot_age")
        self.evidence = gather("slot_class_evidence")
        self.appearance = gather("slot_appearance")
        self.by_look = by_look
        self.pending = (stack("pending_object_id") >= 0).any(1)
        logits = self.mask_logits[rows, self.slot]  # (B, P, h4, w4)
        p = logits.shape[1]
        self.history = gather("slot_masks") * self.valid[..., None, None]
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
        self.detection, self.detection_valid = _padded(detections, device)  # (B, D)
        self.detection_scores = self.scores[rows, self.detection]
        d = self.detection.shape[1]
        self.detection_masks = upsample_masks(
            self.mask_logits[rows, self.detection].flatten(0, 1), cfg.image_size
        ).reshape(b, d, *cfg.image_size)

    def events(self) -> Tensor:
        """(B,) bool: the frames where a rule may change an identity (the module's list)."""
        eventful = self.pending | self._repeats()
        self._hide_jumps()
        eventful |= self._retires()
        self.lost = self.valid & ~self.seen
        eventful |= self._detections()
        if self.cfg.prompted_handover:
            eventful |= self._handovers()
        return eventful

    def _repeats(self) -> Tensor:
        """``rules.tracks.repeats`` and ``hide_repeats`` over the batch: of seen tracks whose
        masks overlap by more than ``dedup_iou``, the one that best continues its history is
        kept, the others are unseen. Returns (B,) the frames where ``merge_twins`` would
        merge a repeat into its twin instead: an event. The greedy choice runs rank by rank
        (at most P steps, all streams at once); IoUs are compared in float64, as the rule
        compares them in Python floats."""
        cfg, seen = self.cfg, self.seen
        b, p = seen.shape
        rows = torch.arange(b, device=self.device)[:, None]
        now, before = masks_to_grid(self.masks), self.history
        continuity = torch.minimum(now, before).sum((2, 3)) / torch.maximum(now, before).sum(
            (2, 3)
        ).clamp(min=1e-6)
        key = torch.where(seen, -continuity, torch.inf)
        order = torch.sort(key, dim=1, stable=True).indices  # (B, P): slots by rank
        iou = mask_iou(self.masks, self.masks).double()[
            rows[..., None], order[..., None], order[:, None]
        ]
        ranked_seen = seen[rows, order]
        kept = torch.zeros_like(seen)
        twin = torch.full((b, p), -1, dtype=torch.int64, device=self.device)
        for r in range(p):
            overlap = torch.where(kept, iou[:, r], -torch.inf)  # with the tracks kept so far
            best = overlap.argmax(1)  # the first of the largest, in rank order, as max()
            repeat = ranked_seen[:, r] & (overlap[rows[:, 0], best] > cfg.dedup_iou)
            kept[:, r] = ranked_seen[:, r] & ~repeat
            twin[rows[:, 0], order[:, r]] = torch.where(repeat, order[rows[:, 0], best], -1)
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
        last = self.box
        gate = torch.where(
            self.object_id >= 0, cfg.prompted_jump_gate, cfg.unprompted_jump_gate
        ).to(last.dtype)
        gated = (gate > 0) & (self.missing == 0) & (last[..., 2:] > last[..., :2]).all(-1)
        gated &= self.seen
        boxes = mask_boxes(self.masks.flatten(0, 1)).reshape(*self.seen.shape, 4)
        shift = (box_centres(boxes) - box_centres(last)).norm(dim=-1)
        self.seen &= ~(gated & (shift > gate * box_sizes(last)))

    def _retires(self) -> Tensor:
        """An unseen track past its limit of missing frames is retired (``show_or_miss``)."""
        cfg = self.cfg
        prompted = self.object_id >= 0
        limit = torch.where(prompted, cfg.prompted_max_missing, cfg.max_missing)
        kept = prompted & (cfg.prompted_max_missing == 0)
        return (self.valid & ~self.seen & ~kept & (self.missing + 1 > limit)).any(1)

    def _detections(self) -> Tensor:
        """A detection above the floor, large enough, repeating no shown track, that could
        continue a lost track or (confident) start one (``add_detections``)."""
        cfg = self.cfg
        masks = self.detection_masks
        shown = self.masks & self.seen[..., None, None]
        over = (mask_iou(masks, shown) > cfg.dedup_iou).any(2)
        large = masks.flatten(2).sum(2) >= cfg.min_mask_area
        useful = self.detection_scores > cfg.fg_threshold
        if cfg.reid_distance > 0:
            useful |= self.lost.any(1, keepdim=True)
        return (self.detection_valid & large & ~over & useful).any(1)

    def _handovers(self) -> Tensor:
        """A lost prompted track and a shown unprompted one of its class, seen for no more
        frames than it has been missing (``rules.handover``)."""
        lost = self.lost & (self.object_id >= 0)  # (B, P) the prompted object p
        young = self.seen & (self.object_id < 0)  # (B, P) the track c that found it
        label = self.evidence.argmax(-1)
        pairs = (
            lost[:, :, None]
            & young[:, None, :]
            & (self.age[:, None, :] <= (self.missing + 1)[:, :, None])
            & (self.slot_labels[:, None, :] == label[:, :, None])
        )
        return pairs.flatten(1).any(1)

    def _positions(self, i: int, slots: list[int]) -> Tensor:
        """Where slots of stream ``i`` lie along the padded axis."""
        at = {s: k for k, s in enumerate(self.active[i])}
        return torch.tensor([at[s] for s in slots], dtype=torch.int64, device=self.device)

    def looks(self, i: int, cue: Look | None, shown: list[int]) -> Tensor | None:
        """The looks of stream ``i``'s shown tracks (``rules.looks.look_at_visible``)."""
        return None if cue is None else cue.of(self.masks[i, self._positions(i, shown)])

    def write_quiet(
        self,
        i: int,
        shown: list[int],
        cue: Look | None,
        looks: Tensor | None,
        propagated: Tensor | None,
    ) -> None:
        """Everything ``update_stream`` writes at a quiet frame, for stream ``i``: missing
        counts, the remembered looks, and the history, boxes, classes and ages of ``_record``."""
        cfg, state = self.cfg, self.states[i]
        active = torch.tensor(self.active[i], dtype=torch.int64, device=self.device)
        k = len(self.active[i])
        state.slot_missing[active] = torch.where(self.seen[i, :k], 0, self.missing[i, :k] + 1)
        idx = torch.tensor(shown, dtype=torch.int64, device=self.device)
        at = self._positions(i, shown)
        if cue is not None and looks is not None:
            rate = torch.full((len(shown),), _LOOK_RATE, device=self.device)
            if cfg.reid_look > 0:
                off = (looks - state.slot_appearance[idx]).norm(dim=1) > cfg.reid_look
                rate = torch.where(off, 0.0, rate)
            state.slot_appearance[idx] = cue.follow(state.slot_appearance[idx], looks, rate)
        grid = torch.zeros_like(state.slot_masks)
        if shown:
            masks = self.masks[i, at]
            grid[idx] = masks_to_grid(masks).to(grid.dtype)
            state.slot_box[idx] = mask_boxes(masks)
            state.slot_label[idx] = self.slot_labels[i, at]
            state.slot_class_evidence[idx] += self.class_probs[i, idx]
            state.slot_age[idx] += 1
        state.slot_masks = grid
        if propagated is not None:
            soft = torch.zeros_like(grid)
            if shown:
                near = F.max_pool2d(grid[idx][:, None], 3, stride=1, padding=1)[:, 0] > 0
                soft[idx] = propagated[idx].to(grid.dtype) * near
            state.slot_soft_masks = soft
        state.frames_seen += 1

    def labels_of(self, i: int, order: list[int]) -> Tensor:
        """The class of each shown track of quiet stream ``i``, in track-id order: the most
        probability summed over the frames it was visible."""
        idx = torch.tensor(order, dtype=torch.int64, device=self.device)
        return self.states[i].slot_class_evidence[idx].argmax(-1)

    def result(self, i: int, order: list[int], labels: Tensor, names: list[int]) -> StepResult:
        state = self.states[i]
        idx = torch.tensor(order, dtype=torch.int64, device=self.device)
        at = self._positions(i, order)
        return StepResult(
            frame_index=state.frames_seen - 1,
            track_ids=state.slot_track_id[idx],
            labels=labels,
            label_names=[self.cfg.class_names[c] for c in names],
            scores=self.slot_scores[i, at],
            masks=self.masks[i, at],
            boxes=state.slot_box[idx],
            prompt_object_ids=state.slot_object_id[idx],
            class_logits=self.class_logits[i],
            mask_logits=self.raw_mask_logits[i],
        )
