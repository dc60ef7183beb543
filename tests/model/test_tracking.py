"""Track bookkeeping on crafted network outputs: allocation, dedup, retirement, prompts."""

from __future__ import annotations

import dataclasses

import torch

from ausm_stream.model import AUSMConfig
from ausm_stream.model.state import StreamState, empty_state_tensors
from ausm_stream.model.tracking import mask_boxes, sample_slot, update_stream, upsample_masks

CFG = AUSMConfig.preset("tiny", n_id=4, n_det=4, max_missing=2)
H4, W4 = CFG.mask_size


def fresh_state(seed: int = 0, cfg: AUSMConfig = CFG) -> StreamState:
    return StreamState(
        arch=cfg.arch_fingerprint(),
        **empty_state_tensors(cfg),
        seed=seed,
        frames_seen=0,
        alloc_count=0,
        next_track_id=1,
    )


def outputs(visible: dict[int, tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Class/mask logits where query q shows a 6x6 box at 1/4-grid (row, col), class 1."""
    cls = torch.full((CFG.num_queries, CFG.num_classes + 1), -10.0)
    cls[:, -1] = 10.0  # no object everywhere...
    masks = torch.full((CFG.num_queries, H4, W4), -10.0)
    for q, (r, c) in visible.items():  # ...except the queries shown
        cls[q, -1], cls[q, 1] = -10.0, 10.0
        masks[q, r : r + 6, c : c + 6] = 10.0
    return cls, masks


def det(i: int) -> int:
    return CFG.n_id + i


def test_detections_get_deterministic_slots_and_fresh_track_ids():
    a, b = fresh_state(seed=5), fresh_state(seed=5)
    ra = update_stream(CFG, a, *outputs({det(0): (2, 2), det(2): (20, 20)}))
    rb = update_stream(CFG, b, *outputs({det(0): (2, 2), det(2): (20, 20)}))
    assert torch.equal(ra.masks, rb.masks)
    assert ra.track_ids.tolist() == [1, 2] and ra.label_names == ["square", "square"]
    assert torch.equal(a.slot_track_id, b.slot_track_id)
    first = sample_slot([0, 1, 2, 3], 5, 0)
    assert int(a.slot_track_id[first]) == 1
    assert ra.masks.shape == (2, *CFG.image_size)


def test_duplicate_detections_and_tracked_objects_are_not_added_twice():
    s = fresh_state()
    r = update_stream(CFG, s, *outputs({det(0): (2, 2), det(1): (2, 2)}))
    assert r.track_ids.tolist() == [1]
    slot = int(s.slot_active.nonzero()[0])
    # Next frame the track's own query sees it and a detection query finds it again.
    r = update_stream(CFG, s, *outputs({slot: (3, 3), det(3): (3, 3)}))
    assert r.track_ids.tolist() == [1]


def test_track_survives_short_occlusion_and_retires_after_max_missing():
    s = fresh_state()
    update_stream(CFG, s, *outputs({det(0): (2, 2)}))
    slot = int(s.slot_active.nonzero()[0])
    for _ in range(CFG.max_missing):  # hidden, but kept
        assert len(update_stream(CFG, s, *outputs({}))) == 0
        assert bool(s.slot_active[slot]) and s.slot_masks[slot].sum() == 0
    r = update_stream(CFG, s, *outputs({slot: (4, 4)}))
    assert r.track_ids.tolist() == [1]  # same id after the occlusion
    for _ in range(CFG.max_missing + 1):
        update_stream(CFG, s, *outputs({}))
    assert not bool(s.slot_active.any())
    r = update_stream(CFG, s, *outputs({det(1): (9, 9)}))
    assert r.track_ids.tolist() == [2]  # ids are never reused


def test_full_buffer_drops_extra_detections_and_prompts_displace_them():
    s = fresh_state()
    shown = {det(i): (2 + 7 * i, 2) for i in range(4)}
    update_stream(CFG, s, *outputs(shown))
    assert bool(s.slot_active.all())
    # The four tracks stay visible and a fifth object appears: there is no room for it.
    tracks = s.slot_track_id.tolist()
    seen = {slot: shown[det(tracks[slot] - 1)] for slot in range(CFG.n_id)}
    r = update_stream(CFG, s, *outputs({**seen, det(0): (30, 30)}))
    assert r.track_ids.tolist() == [1, 2, 3, 4]
    # A prompt still gets in: it displaces an unprompted track that was unseen this frame.
    s.pending_object_id[0] = 77
    s.pending_masks[0] = False
    s.pending_masks[0, 100:110, 100:110] = True
    r = update_stream(CFG, s, *outputs({}))
    assert r.prompt_object_ids.tolist() == [77] and bool(s.slot_active.all())


def test_prompt_over_a_visible_track_adopts_it():
    s = fresh_state()
    update_stream(CFG, s, *outputs({det(0): (2, 2)}))
    slot = int(s.slot_active.nonzero()[0])
    s.pending_object_id[1] = 3
    s.pending_masks[1, 8:32, 8:32] = True  # the 6x6 box on the 1/4 grid, at full resolution
    r = update_stream(CFG, s, *outputs({slot: (2, 2)}))
    assert r.track_ids.tolist() == [1] and r.prompt_object_ids.tolist() == [3]
    assert int(s.pending_object_id.max()) == -1  # the queue is drained


def test_an_object_back_from_behind_another_keeps_its_track_id():
    s = fresh_state()
    update_stream(CFG, s, *outputs({det(0): (10, 10)}))
    slot = int(s.slot_active.nonzero()[0])
    for _ in range(CFG.max_missing - 1):  # hidden: its own query sees nothing
        assert len(update_stream(CFG, s, *outputs({}))) == 0
    # It comes back a little further on, found by a detection query, not by its ID query.
    r = update_stream(CFG, s, *outputs({det(2): (12, 13)}))
    assert r.track_ids.tolist() == [1]
    assert int(s.slot_track_id[slot]) == 1 and int(s.slot_missing[slot]) == 0
    # Far from where it was last seen, a detection is a new object.
    update_stream(CFG, s, *outputs({slot: (12, 13)}))
    update_stream(CFG, s, *outputs({}))
    r = update_stream(CFG, s, *outputs({det(1): (30, 0)}))
    assert r.track_ids.tolist() == [2]


def test_reidentification_can_be_turned_off():
    cfg = AUSMConfig.preset("tiny", n_id=4, n_det=4, max_missing=2, reid_distance=0.0)
    s = fresh_state()
    update_stream(cfg, s, *outputs({det(0): (10, 10)}))
    update_stream(cfg, s, *outputs({}))
    assert update_stream(cfg, s, *outputs({det(2): (10, 11)})).track_ids.tolist() == [2]


def test_mask_boxes_are_pixel_edges():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 9, 0] = True
    assert mask_boxes(masks).tolist() == [[3, 2, 9, 5], [0, 9, 1, 10]]


def test_a_track_that_jumps_onto_another_object_is_left_unseen():
    s = fresh_state()
    update_stream(CFG, s, *outputs({det(0): (4, 4), det(1): (20, 20)}))
    big, small = (int(i) for i in s.slot_active.nonzero().flatten())
    if int(s.slot_track_id[big]) != 1:
        big, small = small, big
    # The small object hides behind the big one: both ID queries now show the big one.
    r = update_stream(CFG, s, *outputs({big: (4, 4), small: (4, 4)}))
    assert r.track_ids.tolist() == [1]  # the track whose history matches keeps it
    assert bool(s.slot_active[small]) and int(s.slot_missing[small]) == 1
    assert float(s.slot_masks[small].sum()) == 0.0


def test_a_weak_detection_continues_a_lost_track_but_never_starts_one():
    def weak(q, at):
        cls, masks = outputs({q: at})
        cls[q, 1], cls[q, -1] = -0.85, 0.0  # foreground score ~0.3: below fg_threshold
        return cls, masks

    s = fresh_state()
    update_stream(CFG, s, *outputs({det(0): (10, 10)}))
    update_stream(CFG, s, *outputs({}))
    assert update_stream(CFG, s, *weak(det(1), (11, 11))).track_ids.tolist() == [1]
    assert len(update_stream(CFG, s, *weak(det(1), (28, 0)))) == 0  # far away: nothing
    strict = AUSMConfig.preset("tiny", n_id=4, n_det=4, max_missing=2, reid_threshold=0.5)
    assert len(update_stream(strict, s, *weak(det(1), (11, 11)))) == 0


def test_a_track_continues_below_the_bar_that_starts_one():
    def scored(q, at, score):
        cls, masks = outputs({q: at})
        cls[q, 1], cls[q, -1] = 0.0, float(torch.log(torch.tensor(1 / score - 1)))
        return cls, masks

    cfg = AUSMConfig.preset("tiny", n_id=4, n_det=4, fg_threshold=0.9, track_threshold=0.5)
    s = fresh_state()
    assert len(update_stream(cfg, s, *scored(det(0), (2, 2), 0.7))) == 0  # too weak to start
    assert update_stream(cfg, s, *scored(det(0), (2, 2), 0.95)).track_ids.tolist() == [1]
    slot = int(s.slot_active.nonzero()[0])
    r = update_stream(cfg, s, *scored(slot, (3, 3), 0.7))  # strong enough to continue
    assert r.track_ids.tolist() == [1] and abs(float(r.scores[0]) - 0.7) < 1e-4
    assert len(update_stream(cfg, s, *scored(slot, (3, 3), 0.4))) == 0  # below: unseen
    assert bool(s.slot_active[slot]) and int(s.slot_missing[slot]) == 1


def test_a_track_keeps_its_class_when_one_frame_disagrees_and_follows_the_evidence():
    def as_class(q, at, label):
        cls, masks = outputs({q: at})
        cls[q, 1], cls[q, label] = -10.0, 10.0
        return cls, masks

    s = fresh_state()
    update_stream(CFG, s, *outputs({det(0): (2, 2)}))  # square
    slot = int(s.slot_active.nonzero()[0])
    shown = [update_stream(CFG, s, *as_class(slot, (2, 2), c)).label_names for c in (1, 2)]
    assert shown == [["square"], ["square"]]  # two squares, then one triangle: a square
    update_stream(CFG, s, *as_class(slot, (2, 2), 2))  # a tie
    assert update_stream(CFG, s, *as_class(slot, (2, 2), 2)).label_names == ["triangle"]
    # A new track starts from its own evidence only (a retired slot's is cleared).
    for _ in range(CFG.max_missing + 1):
        update_stream(CFG, s, *outputs({}))
    assert not bool(s.slot_active.any()) and float(s.slot_class_evidence.abs().sum()) == 0.0
    assert update_stream(CFG, s, *outputs({det(1): (20, 20)})).label_names == ["square"]


def prompt(s: StreamState, object_id: int, row: int, col: int) -> None:
    s.pending_object_id[0] = object_id
    s.pending_masks[0] = False
    s.pending_masks[0, 4 * row : 4 * row + 24, 4 * col : 4 * col + 24] = True


def test_a_prompted_object_that_left_the_view_is_found_again_under_its_id():
    s = fresh_state()
    prompt(s, 42, 2, 2)
    r = update_stream(CFG, s, *outputs({det(0): (2, 2)}))  # a query sees it: its class
    assert r.prompt_object_ids.tolist() == [42] and r.track_ids.tolist() == [1]
    for _ in range(10 * CFG.max_missing):  # it left the view, for long
        assert len(update_stream(CFG, s, *outputs({}))) == 0
    assert int(s.slot_object_id.max()) == 42  # kept, not retired
    # An unprompted track gone as long is retired meanwhile; the prompted one comes back
    # through the opposite edge, found by a confident detection of its class.
    r = update_stream(CFG, s, *outputs({det(1): (24, 24)}))
    assert r.prompt_object_ids.tolist() == [42] and r.track_ids.tolist() == [1]


def test_prompted_tracks_can_be_retired_like_others():
    cfg = AUSMConfig.preset("tiny", n_id=4, n_det=4, max_missing=2, prompted_max_missing=3)
    s = fresh_state()
    prompt(s, 42, 2, 2)
    update_stream(cfg, s, *outputs({det(0): (2, 2)}))
    for _ in range(4):
        update_stream(cfg, s, *outputs({}))
    assert not bool(s.slot_active.any())
    r = update_stream(cfg, s, *outputs({det(1): (24, 24)}))
    assert r.prompt_object_ids.tolist() == [-1] and r.track_ids.tolist() == [2]


def test_a_prompted_track_that_jumps_onto_a_neighbour_is_unseen_there():
    """An ID query that leaps a box size in one frame has jumped onto another object."""
    for gate, shown in [(0.5, []), (0.0, [42])]:
        cfg = dataclasses.replace(CFG, prompted_jump_gate=gate)
        s = fresh_state()
        prompt(s, 42, 2, 2)
        update_stream(cfg, s, *outputs({det(0): (2, 2)}))
        slot = int(s.slot_active.nonzero()[0])
        assert update_stream(cfg, s, *outputs({slot: (3, 3)})).prompt_object_ids.tolist() == [42]
        jumped = update_stream(cfg, s, *outputs({slot: (20, 20)}))
        assert jumped.prompt_object_ids.tolist() == shown, gate


def test_an_unprompted_track_that_jumps_is_unseen_there_under_its_own_gate():
    """Each kind of track has its own gate: the prompted one never hides an unprompted track."""
    for prompted_gate, unprompted_gate, shown in [(0.5, 0.0, [1]), (0.0, 0.5, [])]:
        cfg = dataclasses.replace(
            CFG, prompted_jump_gate=prompted_gate, unprompted_jump_gate=unprompted_gate
        )
        s = fresh_state()
        update_stream(cfg, s, *outputs({det(0): (2, 2)}))
        slot = int(s.slot_active.nonzero()[0])
        assert update_stream(cfg, s, *outputs({slot: (3, 3)})).track_ids.tolist() == [1]
        jumped = update_stream(cfg, s, *outputs({slot: (20, 20)}))
        assert jumped.track_ids.tolist() == shown, (prompted_gate, unprompted_gate)


def test_a_lost_prompted_object_takes_over_the_young_track_that_found_it():
    for handover, ids, objects in [(True, [1], [42]), (False, [2], [-1])]:
        cfg = dataclasses.replace(CFG, prompted_handover=handover)
        s = fresh_state()
        prompt(s, 42, 2, 2)
        update_stream(cfg, s, *outputs({det(0): (2, 2)}))
        # Lost; a frame later a detection far from where it was seen (out of re-id reach)
        # starts a track, which the prompted object takes over while its own query is lost.
        update_stream(cfg, s, *outputs({}))
        r = update_stream(cfg, s, *outputs({det(1): (20, 20)}))
        assert r.track_ids.tolist() == ids and r.prompt_object_ids.tolist() == objects
        young = int(s.slot_track_id.tolist().index(ids[0]))
        r = update_stream(cfg, s, *outputs({young: (21, 21)}))
        assert r.track_ids.tolist() == ids and r.prompt_object_ids.tolist() == objects
        # without the hand-over both tracks go on; with it the prompted one's old slot is free
        assert s.active_track_ids == ([1] if handover else [1, 2])


def test_a_track_older_than_the_loss_is_never_taken_over():
    s = fresh_state()
    prompt(s, 42, 2, 2)
    update_stream(CFG, s, *outputs({det(0): (2, 2), det(1): (20, 20)}))
    mine, other = (int((s.slot_track_id == t).nonzero()[0]) for t in (1, 2))
    for _ in range(3):  # both seen for a while
        update_stream(CFG, s, *outputs({mine: (2, 2), other: (20, 20)}))
    r = update_stream(CFG, s, *outputs({other: (20, 20)}))  # the prompted object is lost
    assert r.track_ids.tolist() == [2] and r.prompt_object_ids.tolist() == [-1]


def test_a_track_keeps_only_the_part_of_its_mask_where_its_object_was():
    """An ID query that also lights up a second object away from its own keeps only the part
    connected to where its object was at the frame before; the other object is left to a
    detection, which starts its own track."""
    for connected in (True, False):
        # (without the rule the two-object mask's centre leaps: the jump gate is off here)
        cfg = dataclasses.replace(CFG, connected_tracks=connected, unprompted_jump_gate=0.0)
        s = fresh_state()
        update_stream(cfg, s, *outputs({det(0): (2, 2)}))
        slot = int(s.slot_active.nonzero()[0])
        cls, masks = outputs({slot: (3, 3), det(1): (20, 20)})
        masks[slot, 20:26, 20:26] = 10.0  # the track's query also shows the far object
        r = update_stream(cfg, s, cls, masks)
        assert r.track_ids.tolist() == [1, 2], connected
        shown = outputs({slot: (3, 3)})[1] if connected else masks  # near part / both
        expected = upsample_masks(shown[slot : slot + 1], CFG.image_size)[0]
        assert torch.equal(r.masks[r.track_ids.tolist().index(1)], expected)


def test_a_track_split_by_an_occluder_keeps_both_parts():
    """Parts of one object on either side of a thin occluder both touch where it was."""
    s = fresh_state()
    update_stream(CFG, s, *outputs({det(0): (2, 2)}))
    slot = int(s.slot_active.nonzero()[0])
    cls, masks = outputs({slot: (2, 2)})
    masks[slot, :, 4] = -10.0  # a one-cell gap splits the mask in two
    r = update_stream(CFG, s, cls, masks)
    expected = upsample_masks(masks[slot : slot + 1], CFG.image_size)[0]
    assert torch.equal(r.masks[0], expected)


RED, BLUE = (220, 30, 30), (30, 30, 220)


def painted(boxes: dict[tuple[int, int], tuple[int, int, int]]) -> torch.Tensor:
    """A grey frame with a 24-pixel square of each colour at 1/4-grid (row, col)."""
    frame = torch.full((*CFG.image_size, 3), 128, dtype=torch.uint8)
    for (r, c), colour in boxes.items():
        frame[4 * r : 4 * r + 24, 4 * c : 4 * c + 24] = torch.tensor(colour, dtype=torch.uint8)
    return frame


def two_prompted_objects(cfg: AUSMConfig) -> tuple[StreamState, int, int]:
    """Object 7 (red, top left) and object 8 (blue, bottom right), prompted and seen once
    more; returns the state and the slots of 7 and 8."""
    s = fresh_state()
    for p, (object_id, row) in enumerate([(7, 2), (8, 20)]):
        s.pending_object_id[p] = object_id
        s.pending_masks[p, 4 * row : 4 * row + 24, 4 * row : 4 * row + 24] = True
    frame = painted({(2, 2): RED, (20, 20): BLUE})
    update_stream(cfg, s, *outputs({det(0): (2, 2), det(1): (20, 20)}), frame)
    red, blue = (int((s.slot_object_id == o).nonzero()[0]) for o in (7, 8))
    update_stream(cfg, s, *outputs({red: (2, 2), blue: (20, 20)}), frame)
    return s, red, blue


def test_prompted_identities_that_swap_at_a_crossing_follow_their_look():
    """The two ID queries end on each other's object: with the look on, the names follow
    the colours; without it, the queries."""
    for margin, red_object in [(0.1, 7), (0.0, 8)]:
        cfg = dataclasses.replace(CFG, prompted_jump_gate=0.0, appearance_margin=margin)
        s, red, blue = two_prompted_objects(cfg)
        frame = painted({(3, 3): RED, (19, 19): BLUE})
        r = update_stream(cfg, s, *outputs({red: (19, 19), blue: (3, 3)}), frame)
        at_red = int(r.boxes[:, 0].argmin())  # the track on the top-left (red) object
        assert r.prompt_object_ids[at_red] == red_object, margin
        assert r.track_ids[at_red] == {7: 1, 8: 2}[red_object]
        assert sorted(r.prompt_object_ids.tolist()) == [7, 8]


def test_a_track_on_a_lost_prompted_objects_look_takes_its_identity():
    """Object 7's query lost it and object 8's query moved onto it: the visible track is 7,
    and 8 is the one lost (its query may find it again)."""
    for margin, shown in [(0.1, 7), (0.0, 8)]:
        cfg = dataclasses.replace(CFG, prompted_jump_gate=0.0, appearance_margin=margin)
        s, _, blue = two_prompted_objects(cfg)
        frame = painted({(3, 3): RED})
        r = update_stream(cfg, s, *outputs({blue: (3, 3)}), frame)
        assert r.prompt_object_ids.tolist() == [shown], margin
        assert sorted(s.slot_object_id[s.slot_active].tolist()) == [7, 8]


def test_unprompted_tracks_that_swap_at_a_crossing_follow_their_look_too():
    for margin, on_red_object in [(0.1, 1), (0.0, 2)]:
        cfg = dataclasses.replace(CFG, unprompted_jump_gate=0.0, appearance_margin=margin)
        s = fresh_state()
        frame = painted({(2, 2): RED, (20, 20): BLUE})
        update_stream(cfg, s, *outputs({det(0): (2, 2), det(1): (20, 20)}), frame)
        red, blue = (int((s.slot_track_id == t).nonzero()[0]) for t in (1, 2))
        update_stream(cfg, s, *outputs({red: (2, 2), blue: (20, 20)}), frame)
        frame = painted({(3, 3): RED, (19, 19): BLUE})
        r = update_stream(cfg, s, *outputs({red: (19, 19), blue: (3, 3)}), frame)
        assert r.track_ids[int(r.boxes[:, 0].argmin())] == on_red_object, margin


GREEN = (30, 200, 30)


def test_a_lost_track_is_continued_near_where_it_was_whatever_class_one_frame_shows():
    s = fresh_state()
    update_stream(CFG, s, *outputs({det(0): (10, 10)}))
    update_stream(CFG, s, *outputs({}))
    cls, masks = outputs({det(2): (11, 11)})
    cls[det(2), 1], cls[det(2), 2] = -10.0, 10.0  # this frame's class head says "triangle"
    assert update_stream(CFG, s, cls, masks).track_ids.tolist() == [1]


def test_a_lost_track_is_found_again_by_its_look_anywhere_in_the_frame():
    """Red (track 1) and blue (track 2) are lost; a red object far from where either was
    continues track 1 and a green one starts a track. Without the look, red is new too."""
    for reid_look, red_id, green_id in [(0.1, 1, 3), (0.0, 3, 4)]:
        cfg = dataclasses.replace(CFG, reid_look=reid_look)
        s = fresh_state()
        frame = painted({(2, 2): RED, (20, 20): BLUE})
        update_stream(cfg, s, *outputs({det(0): (2, 2), det(1): (20, 20)}), frame)
        update_stream(cfg, s, *outputs({}), painted({}))
        frame = painted({(20, 2): RED, (2, 20): GREEN})
        r = update_stream(cfg, s, *outputs({det(2): (20, 2), det(3): (2, 20)}), frame)
        at_red = int(r.boxes[:, 1].argmax())  # the lower object
        assert r.track_ids[at_red] == red_id, reid_look
        assert r.track_ids[1 - at_red] == green_id, reid_look


def test_two_tracks_on_one_object_that_look_alike_merge_into_the_older_one():
    """Two red objects, tracked since frames 0 (track 1) and 2 (track 2). Both ID queries
    then show the first object: one object tracked twice, so one identity stays, the older."""
    s = fresh_state()
    reds = painted({(2, 2): RED, (20, 20): RED})
    update_stream(CFG, s, *outputs({det(0): (2, 2)}), reds)
    first = int(s.slot_active.nonzero()[0])
    update_stream(CFG, s, *outputs({first: (2, 2)}), reds)
    update_stream(CFG, s, *outputs({first: (2, 2), det(0): (20, 20)}), reds)
    second = int((s.slot_track_id == 2).nonzero()[0])
    r = update_stream(CFG, s, *outputs({first: (2, 2), second: (2, 2)}), reds)
    assert r.track_ids.tolist() == [1] and int(s.slot_active.sum()) == 1
    assert float(s.slot_class_evidence.sum()) > 3.5  # both tracks' evidence adds up


def test_a_track_whose_query_jumps_onto_an_unlike_object_is_kept_not_merged():
    """A blue track whose query jumps onto a red one is an occluded object, not a twin: kept,
    unseen. ``appearance_margin`` 0 turns the trades off, not the looks ``reid_look`` needs."""
    for margin in (0.1, 0.0):
        cfg = dataclasses.replace(CFG, appearance_margin=margin)
        s = fresh_state()
        frame = painted({(2, 2): RED, (20, 20): BLUE})
        update_stream(cfg, s, *outputs({det(0): (2, 2), det(1): (20, 20)}), frame)
        red, blue = (int((s.slot_track_id == t).nonzero()[0]) for t in (1, 2))
        r = update_stream(cfg, s, *outputs({red: (2, 2), blue: (2, 2)}), painted({(2, 2): RED}))
        assert r.track_ids.tolist() == [1] and bool(s.slot_active[blue]), margin


def test_a_prompted_identity_outlives_its_unprompted_twin():
    s = fresh_state()
    reds = painted({(2, 2): RED, (20, 20): RED})
    update_stream(CFG, s, *outputs({det(0): (2, 2)}), reds)
    update_stream(CFG, s, *outputs({int(s.slot_active.nonzero()[0]): (2, 2)}), reds)
    prompt(s, 9, 20, 20)
    update_stream(CFG, s, *outputs({}), reds)
    slots = {int(s.slot_track_id[i]): i for i in s.slot_active.nonzero().flatten().tolist()}
    r = update_stream(CFG, s, *outputs({slots[1]: (20, 20), slots[2]: (20, 20)}), reds)
    assert r.prompt_object_ids.tolist() == [9] and r.track_ids.tolist() == [2]


def test_a_frame_that_shows_something_else_leaves_the_look_as_it_is():
    s = fresh_state()
    update_stream(CFG, s, *outputs({det(0): (2, 2)}), painted({(2, 2): RED}))
    slot = int(s.slot_active.nonzero()[0])
    look = s.slot_appearance[slot].clone()
    update_stream(CFG, s, *outputs({slot: (2, 2)}), painted({(2, 2): BLUE}))
    assert torch.equal(s.slot_appearance[slot], look)
    shade = tuple(c - 10 for c in RED)  # the same object in other light: the look follows
    update_stream(CFG, s, *outputs({slot: (2, 2)}), painted({(2, 2): shade}))
    assert float(s.slot_appearance[slot, 0]) < float(look[0])
