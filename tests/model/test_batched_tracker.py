"""The batched tracker (``tracking/batched.py``) equals the per-stream reference to the bit:
on every crafted case of the reference's own tests, on whole videos through the model, and
with the frames of a batch mixing quiet streams and streams with events. Its reads to the
host per step do not grow with the number of quiet streams."""

from __future__ import annotations

import inspect
import random

import pytest
import torch

from ausm_stream.model import AUSM
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.model.device import HostReads
from ausm_stream.model.state import StreamState
from ausm_stream.model.tracking import StepResult, batched, update_batch, update_stream
from ausm_stream.model.tracking.slots import sample_slot, sample_slots, seed_bits
from ausm_stream.model.versions import DEFAULT_WEIGHTS
from tests.model import test_tracking, test_tracking_looks
from tests.model.test_tracking import CFG, det, fresh_state, outputs

FIELDS = ("track_ids", "labels", "scores", "masks", "boxes", "prompt_object_ids")


def assert_same_results(got: StepResult, expected: StepResult) -> None:
    assert got.frame_index == expected.frame_index
    assert got.label_names == expected.label_names
    for name in FIELDS:
        a, b = getattr(got, name), getattr(expected, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name


def assert_same_state(got: StreamState, expected: StreamState) -> None:
    for name, tensor in expected.tensors().items():
        assert torch.equal(getattr(got, name), tensor), name
    for name in ("frames_seen", "alloc_count", "next_track_id"):
        assert getattr(got, name) == getattr(expected, name), name


def batched_twin(
    cfg, state, class_logits, mask_logits, frame=None, look_features=None, propagated=None
):
    """``update_stream``'s signature through ``update_batch``: the stream is batched beside a
    copy of itself, and both must match the reference run on a third copy."""
    twin, reference = state.clone(), state.clone()
    expected = update_stream(
        cfg, reference, class_logits, mask_logits, frame, look_features, propagated
    )

    def pair(t):
        return None if t is None else torch.stack([t, t])

    got = update_batch(
        cfg,
        [state, twin],
        pair(class_logits),
        pair(mask_logits),
        pair(frame),
        pair(look_features),
        pair(propagated),
    )
    for result, s in zip(got, (state, twin), strict=True):
        assert_same_results(result, expected)
        assert_same_state(s, reference)
    return got[0]


def crafted_cases():
    for module in (test_tracking, test_tracking_looks):
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("test_") and func.__module__ == module.__name__:
                marks = getattr(func, "pytestmark", [])
                params = [m for m in marks if m.name == "parametrize"]
                if params:
                    argname, values = params[0].args
                    for value in values:
                        yield pytest.param(module, func, {argname: value}, id=f"{name}[{value}]")
                elif not inspect.signature(func).parameters:
                    yield pytest.param(module, func, {}, id=name)


@pytest.mark.parametrize(("module", "case", "kwargs"), list(crafted_cases()))
def test_every_crafted_case_of_the_reference_holds_batched_and_equal(
    monkeypatch, module, case, kwargs
):
    """Each of the reference's crafted tests (tracks, prompts, detections, jumps, hand-overs,
    looks, merges, trades) runs again with every step through ``update_batch``, and each step
    is checked against the reference on a copy of the stream."""
    monkeypatch.setattr(module, "update_stream", batched_twin)
    case(**kwargs)


def test_crafted_cases_were_found():
    assert len(list(crafted_cases())) >= 30


def test_quiet_streams_and_streams_with_events_in_one_batch(monkeypatch):
    """Three streams: one whose track just goes on, one where a detection starts a track
    (both decided batched), one with a prompt queued (an event); each equals the reference,
    and only the last goes through the per-stream rules."""
    states = [fresh_state(seed=i) for i in range(3)]
    warm = outputs({det(0): (4, 4)})
    for s in states:
        update_stream(CFG, s, *warm)
    test_tracking.prompt(states[2], 7, 16, 16)
    slot = [int(s.slot_active.nonzero()) for s in states]  # each stream's one track
    steps = [
        outputs({slot[0]: (5, 4)}),
        outputs({slot[1]: (5, 4), det(1): (20, 20)}),
        outputs({slot[2]: (5, 4)}),
    ]
    reference = [s.clone() for s in states]
    expected = [update_stream(CFG, r, *o) for r, o in zip(reference, steps, strict=True)]
    calls = []

    def counted(cfg, state, *args):
        calls.append(next(i for i, s in enumerate(states) if s is state))
        return update_stream(cfg, state, *args)

    monkeypatch.setattr(batched, "update_stream", counted)
    cls, masks = torch.stack([o[0] for o in steps]), torch.stack([o[1] for o in steps])
    got = update_batch(CFG, states, cls, masks)
    assert calls == [2]
    for g, e, s, r in zip(got, expected, states, reference, strict=True):
        assert_same_results(g, e)
        assert_same_state(s, r)
    assert len(got[1]) == 2 and got[2].prompt_object_ids.tolist()[-1] == 7


def test_reads_per_step_do_not_grow_with_quiet_streams():
    """A step of 2 and of 12 quiet streams (each with two tracks going on) reads the host
    the same number of times; the reference reads per stream."""
    counts = {}
    for n in (2, 12):
        states = [fresh_state(seed=i) for i in range(n)]
        warm = outputs({det(0): (4, 4), det(1): (20, 20)})
        for s in states:
            update_stream(CFG, s, *warm)
        # The slots of track 1 (the first detection's) and track 2, in each stream.
        slots = [[s.slot_track_id.tolist().index(t) for t in (1, 2)] for s in states]
        steps = [outputs({a: (5, 4), b: (20, 21)}) for a, b in slots]
        cls, masks = torch.stack([o[0] for o in steps]), torch.stack([o[1] for o in steps])
        reference = [s.clone() for s in states]
        with HostReads() as reads:
            got = update_batch(CFG, states, cls, masks)
        with HostReads() as per_stream:
            for r, o in zip(reference, steps, strict=True):
                update_stream(CFG, r, *o)
        assert all(len(r) == 2 for r in got)
        counts[n] = (reads.total, per_stream.total)
    assert counts[2][0] == counts[12][0] <= 8, counts
    assert counts[12][1] > 6 * counts[2][0], counts


@pytest.mark.parametrize("prompted", [False, True])
def test_whole_videos_through_the_model_give_equal_tracks(prompted):
    """The shipped shapes weights over 6 shapes videos as one batch, with each tracker."""
    models = {
        mode: AUSM.from_weights(DEFAULT_WEIGHTS, tracker=mode, batch_cells=1 << 20)
        for mode in ("batched", "per_stream")
    }
    size = models["batched"].cfg.image_size
    videos = [generate_video("test", i, ShapesSpec(size=size, frames=10)) for i in range(6)]
    states = {mode: [m.init_state(seed=i) for i in range(6)] for mode, m in models.items()}
    if prompted:
        for mode, model in models.items():
            for i in (0, 3):
                masks = torch.as_tensor(videos[i].masks[0])
                masks = masks[masks.flatten(1).any(1)][:2]
                model.add_prompt(states[mode][i], masks, list(range(len(masks))))
    tracks = 0
    for t in range(10):
        frames = torch.stack([torch.as_tensor(v.frames[t]) for v in videos])
        got = models["batched"].step(states["batched"], frames)
        expected = models["per_stream"].step(states["per_stream"], frames)
        for g, e in zip(got, expected, strict=True):
            assert_same_results(g, e)
            tracks += len(e)
    for g, e in zip(states["batched"], states["per_stream"], strict=True):
        assert_same_state(g, e)
    assert tracks >= 60


def test_slots_drawn_on_the_device_are_the_hosts_draws():
    """``sample_slots`` (int64 tensors, wrapping as uint64) draws what ``sample_slot`` draws,
    for seeds across the whole 64-bit range (the top bit set included)."""
    rng = random.Random(7)
    free = torch.rand(400, CFG.n_id * 4, generator=torch.Generator().manual_seed(7)) < 0.5
    free[:, 0] = True
    seeds = [
        rng.choice([rng.getrandbits(64), rng.getrandbits(16), 0, 2**63, 2**64 - 1])
        for _ in range(400)
    ]
    counts = [rng.randrange(10**6) for _ in range(400)]
    got = sample_slots(
        free, torch.tensor([seed_bits(s) for s in seeds]), torch.tensor(counts)
    ).tolist()
    want = [
        sample_slot(row.nonzero().flatten().tolist(), seed, count)
        for row, seed, count in zip(free, seeds, counts, strict=True)
    ]
    assert got == want
