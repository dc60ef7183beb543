"""A batched step over N streams equals N single-stream steps, bit for bit.

Exact equality (not a tolerance) because recovery replays streams in whatever batches are
ready then, and must reproduce what was emitted before the failure.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import disc_mask, make_frames, make_model


def _streams(model):
    states = [model.init_state(seed=s) for s in (11, 12, 13)]
    size = model.cfg.image_size
    # Different numbers of prompted objects per stream: 0, 1 and 3.
    model.add_prompt(states[1], disc_mask(size, 40, 40, 12)[None], [5])
    model.add_prompt(
        states[2],
        torch.stack(
            [disc_mask(size, 30, 30, 10), disc_mask(size, 90, 40, 14), disc_mask(size, 60, 100, 8)]
        ),
        [1, 2, 3],
    )
    return states


def test_batched_step_equals_single_stream_steps():
    # A high threshold keeps random-weight detections few, so track counts differ per stream.
    model = make_model(fg_threshold=0.85)
    frames = [make_frames(4, seed=20 + i) for i in range(3)]
    batched, single = _streams(model), _streams(model)
    counts = set()
    for t in range(4):
        rb = model.step(batched, torch.stack([f[t] for f in frames]))
        rs = [model.step([s], f[t : t + 1])[0] for s, f in zip(single, frames, strict=True)]
        for b, s in zip(rb, rs, strict=True):
            assert torch.equal(b.track_ids, s.track_ids)
            assert torch.equal(b.prompt_object_ids, s.prompt_object_ids)
            assert torch.equal(b.masks, s.masks)
            assert torch.equal(b.scores, s.scores)
            assert torch.equal(b.mask_logits, s.mask_logits)
            assert torch.equal(b.class_logits, s.class_logits)
        counts.add(tuple(len(r) for r in rb))
    for sb, ss in zip(batched, single, strict=True):
        assert sb.active_track_ids == ss.active_track_ids
        assert torch.equal(sb.ssm, ss.ssm) and torch.equal(sb.conv, ss.conv)
        assert torch.equal(sb.x_prev, ss.x_prev) and torch.equal(sb.slot_masks, ss.slot_masks)
    assert any(len(set(c)) > 1 for c in counts), f"streams never differed in tracks: {counts}"


@pytest.mark.parametrize(
    ("runtime", "groups"),
    [
        ({"batch_cells": 256}, 5),  # one stream per micro-batch
        ({"step_lanes": 2}, 2),  # micro-batches stepped concurrently in two threads
    ],
)
def test_splitting_a_batch_never_changes_results(runtime, groups):
    whole = make_model(fg_threshold=0.85, batch_cells=10**6)  # all streams in one group
    split = make_model(fg_threshold=0.85, **runtime)
    assert len(whole._micro_batches(5)) == 1 and len(split._micro_batches(5)) == groups
    frames = make_frames(5, seed=30)
    a = [whole.init_state(seed=i) for i in range(5)]
    b = [split.init_state(seed=i) for i in range(5)]
    for _ in range(3):
        ra, rb = whole.step(a, frames), split.step(b, frames)
    for x, y, sa, sb in zip(ra, rb, a, b, strict=True):
        assert torch.equal(x.mask_logits, y.mask_logits) and torch.equal(x.track_ids, y.track_ids)
        assert torch.equal(sa.ssm, sb.ssm)
    assert (split._lane_pool is not None) == ("step_lanes" in runtime)


def test_regrouping_streams_between_steps_never_changes_results():
    """Streams stepped in changing groups (as a worker's ready set changes) give what they
    give alone, and a step never touches the streams left out of it."""
    model = make_model(fg_threshold=0.85)
    frames = [make_frames(6, seed=40 + i) for i in range(3)]
    regrouped, alone = _streams(model), _streams(model)
    groups = [[0, 1, 2], [0], [2, 1], [1], [0, 2], [2, 0, 1]]
    for t, group in enumerate(groups):
        kept = {i: regrouped[i].clone() for i in range(3) if i not in group}
        got = model.step([regrouped[i] for i in group], torch.stack([frames[i][t] for i in group]))
        for i in range(3):  # the streams left out of this step are untouched by it
            if i not in group:
                assert _same(regrouped[i], kept[i])
        for i, r in zip(group, got, strict=True):
            own = model.step([alone[i]], frames[i][t : t + 1])[0]
            assert torch.equal(r.mask_logits, own.mask_logits)
            assert torch.equal(r.track_ids, own.track_ids)
    assert all(_same(a, b) for a, b in zip(regrouped, alone, strict=True))


def _same(a, b) -> bool:
    ta, tb = a.tensors(), b.tensors()
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
