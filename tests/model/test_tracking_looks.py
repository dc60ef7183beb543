"""The tracker's pluggable look (learned features instead of mean colour), its age counter
and its settings, on crafted network outputs (helpers from ``test_tracking``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ausm_stream.errors import InvalidInputError
from ausm_stream.model import AUSMConfig
from ausm_stream.model.tracking import TrackerConfig, update_stream
from tests.model.test_tracking import CFG, RED, det, fresh_state, outputs, painted, prompt

FEATURES = dataclasses.replace(CFG, backbone="efficientnet_lite0", look="features")
BACKGROUND, A, B, C = 0, 1, 2, 3  # directions of the crafted look features


def features(objects: dict[tuple[int, int], int], stride: int = 8) -> torch.Tensor:
    """Look features (look_dim, H/stride, W/stride): the background has one direction, a
    24-pixel square at 1/4-grid (row, col) its own, area-averaged over each cell as a
    backbone's strides blur them."""
    full = torch.zeros(FEATURES.look_dim, *FEATURES.image_size)
    full[BACKGROUND] = 1.0
    for (r, c), direction in objects.items():
        full[:, 4 * r : 4 * r + 24, 4 * c : 4 * c + 24] = 0.0
        full[direction, 4 * r : 4 * r + 24, 4 * c : 4 * c + 24] = 1.0
    return F.avg_pool2d(full[None], stride)[0]


@pytest.mark.parametrize("stride", [8, 16])
def test_tracks_that_swap_at_a_crossing_keep_their_names_by_feature_look(stride):
    """Two objects of one colour cross and their ID queries swap them: their features tell
    them apart where their colour cannot. Without the features, names follow the queries."""
    reds = painted({(2, 2): RED, (20, 20): RED})
    for cfg, with_features, on_first_object in [
        (FEATURES, True, 1),
        (FEATURES, False, 2),
        (CFG, False, 2),
    ]:
        cfg = dataclasses.replace(cfg, unprompted_jump_gate=0.0)
        s = fresh_state(cfg=cfg)

        def step(shown, objects, s=s, cfg=cfg, with_features=with_features):
            look = features(objects, stride) if with_features else None
            return update_stream(cfg, s, *outputs(shown), reds, look_features=look)

        step({det(0): (2, 2), det(1): (20, 20)}, {(2, 2): A, (20, 20): B})
        first, second = (int((s.slot_track_id == t).nonzero()[0]) for t in (1, 2))
        step({first: (2, 2), second: (20, 20)}, {(2, 2): A, (20, 20): B})
        r = step({first: (19, 19), second: (3, 3)}, {(3, 3): A, (19, 19): B})
        assert r.track_ids[int(r.boxes[:, 0].argmin())] == on_first_object, (
            cfg.look,
            with_features,
        )
        if with_features:  # the remembered looks stay unit vectors
            norms = s.slot_appearance[s.slot_active].norm(dim=1)
            assert torch.allclose(norms, torch.ones_like(norms))


def test_a_lost_track_is_found_again_by_its_feature_look_anywhere_in_the_frame():
    """A (track 1) and B (track 2) are lost; A comes back far from where either was and
    continues track 1, while C starts a track. Without the features, A is new too."""
    for with_features, a_id, c_id in [(True, 1, 3), (False, 3, 4)]:
        s = fresh_state(cfg=FEATURES)

        def step(shown, objects, s=s, with_features=with_features):
            look = features(objects) if with_features else None
            return update_stream(FEATURES, s, *outputs(shown), look_features=look)

        step({det(0): (2, 2), det(1): (20, 20)}, {(2, 2): A, (20, 20): B})
        step({}, {})
        r = step({det(2): (20, 2), det(3): (2, 20)}, {(20, 2): A, (2, 20): C})
        at_a = int(r.boxes[:, 1].argmax())  # the lower object
        assert r.track_ids[at_a] == a_id, with_features
        assert r.track_ids[1 - at_a] == c_id, with_features


def test_a_frame_whose_features_show_something_else_leaves_the_look_as_it_is():
    s = fresh_state(cfg=FEATURES)
    update_stream(FEATURES, s, *outputs({det(0): (2, 2)}), look_features=features({(2, 2): A}))
    slot = int(s.slot_active.nonzero()[0])
    look = s.slot_appearance[slot].clone()
    assert float(look[A]) > 0.99
    update_stream(FEATURES, s, *outputs({slot: (2, 2)}), look_features=features({(2, 2): B}))
    assert torch.allclose(s.slot_appearance[slot], look, atol=1e-6)
    # The same object, its features a little changed: the look follows, and stays a unit vector.
    shade = features({(2, 2): A})
    shade[C, 1:4, 1:4] = 0.05
    update_stream(FEATURES, s, *outputs({slot: (2, 2)}), look_features=shade)
    assert float(s.slot_appearance[slot, C]) > 0.0
    assert abs(float(s.slot_appearance[slot].norm()) - 1.0) < 1e-6


def test_twins_merge_by_feature_look_and_an_occluded_unlike_track_is_kept():
    """Both ID queries show the first object: with the second track's features alike, one
    object was tracked twice (merged, one slot left); unlike, the second is occluded (kept)."""
    for second_object, active in [(A, 1), (B, 2)]:
        s = fresh_state(cfg=FEATURES)
        objects = {(2, 2): A, (20, 20): second_object}
        update_stream(
            FEATURES,
            s,
            *outputs({det(0): (2, 2), det(1): (20, 20)}),
            look_features=features(objects),
        )
        first, second = (int((s.slot_track_id == t).nonzero()[0]) for t in (1, 2))
        r = update_stream(
            FEATURES,
            s,
            *outputs({first: (2, 2), second: (2, 2)}),
            look_features=features({(2, 2): A}),
        )
        assert r.track_ids.tolist() == [1] and int(s.slot_active.sum()) == active, second_object


def test_look_features_of_the_wrong_size_are_refused():
    s = fresh_state(cfg=FEATURES)
    with pytest.raises(InvalidInputError, match="look_features"):
        update_stream(FEATURES, s, *outputs({}), look_features=torch.zeros(3, 16, 16))


def scored(
    shown: dict[int, tuple[int, int]], scores: dict[int, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``outputs`` with the foreground score of some shown queries set."""
    cls, masks = outputs(shown)
    for q, score in scores.items():
        cls[q, 1], cls[q, -1] = 0.0, float(torch.log(torch.tensor(1 / score - 1)))
    return cls, masks


def test_a_twin_merge_keeps_the_identity_seen_longer_whatever_its_class_evidence():
    """Track 1 is seen for three frames at score 0.6, track 2 for two at score 1: track 2
    has more class evidence, track 1 is older. Merged, the older one's name lives on."""
    s = fresh_state()
    reds = painted({(2, 2): RED, (20, 20): RED})
    update_stream(CFG, s, *scored({det(0): (2, 2)}, {det(0): 0.6}), reds)
    first = int(s.slot_active.nonzero()[0])
    update_stream(CFG, s, *scored({first: (2, 2), det(0): (20, 20)}, {first: 0.6}), reds)
    second = int((s.slot_track_id == 2).nonzero()[0])
    update_stream(CFG, s, *scored({first: (2, 2), second: (20, 20)}, {first: 0.6}), reds)
    evidence = s.slot_class_evidence.sum(1)
    assert float(evidence[second]) > float(evidence[first])
    assert s.slot_age[[first, second]].tolist() == [3, 2]
    r = update_stream(CFG, s, *outputs({first: (2, 2), second: (2, 2)}), reds)
    assert r.track_ids.tolist() == [1] and int(s.slot_active.sum()) == 1
    assert int(s.slot_age[first]) == 4  # the older one's age, and this frame


def test_age_counts_visible_frames_moves_with_the_identity_and_ends_with_the_slot():
    s = fresh_state()
    update_stream(CFG, s, *outputs({det(0): (2, 2)}))
    slot = int(s.slot_active.nonzero()[0])
    update_stream(CFG, s, *outputs({slot: (2, 2)}))
    update_stream(CFG, s, *outputs({}))  # unseen: not older
    update_stream(CFG, s, *outputs({slot: (2, 2)}))
    assert int(s.slot_age[slot]) == 3
    for _ in range(CFG.max_missing + 1):
        update_stream(CFG, s, *outputs({}))
    assert not bool(s.slot_active.any()) and int(s.slot_age.abs().sum()) == 0


def test_a_handed_over_identity_keeps_its_age():
    """The young track that found a lost prompted object carries its identity, age included."""
    s = fresh_state()
    prompt(s, 42, 2, 2)
    update_stream(CFG, s, *outputs({det(0): (2, 2)}))
    mine = int(s.slot_active.nonzero()[0])
    update_stream(CFG, s, *outputs({mine: (2, 2)}))
    update_stream(CFG, s, *outputs({}))
    r = update_stream(CFG, s, *outputs({det(1): (20, 20)}))
    assert r.track_ids.tolist() == [1] and r.prompt_object_ids.tolist() == [42]
    young = int((s.slot_track_id == 1).nonzero()[0])
    # 42 was seen for two frames (the longer of the two ages), and is seen at this one
    assert young != mine and int(s.slot_age[young]) == 3


def test_the_tracker_config_is_the_models_tracker_settings():
    cfg = AUSMConfig.preset("tiny", max_missing=7, reid_look=0.3)
    tc = TrackerConfig.from_model(cfg)
    assert TrackerConfig.from_model(cfg) is tc  # cached: asked for at every step
    for field in dataclasses.fields(TrackerConfig):
        assert getattr(tc, field.name) == getattr(cfg, field.name), field.name
    assert (tc.max_missing, tc.reid_look, tc.look) == (7, 0.3, "colour")
    assert tc.num_queries == cfg.num_queries
    with pytest.raises(dataclasses.FrozenInstanceError):
        tc.max_missing = 3  # type: ignore[misc]
