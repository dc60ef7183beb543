"""The worker's logic without Kafka or Ray: batching, replays, prompts, gaps, ends."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ausm_stream.errors import RecordError
from ausm_stream.operators.processor import MAX_FRAME_JUMP, StreamProcessor, stream_seed
from ausm_stream.pipeline.records import ControlRecord, FrameChunk, PromptRecord
from tests.conftest import disc_mask, make_model

SIZE = (64, 64)


def chunk(stream, first, n):
    rng = np.random.default_rng(hash((stream, first)) % 2**32)
    return FrameChunk(
        stream,
        np.arange(first, first + n),
        np.arange(first, first + n) * 10,
        np.arange(first, first + n) + 1_700_000_000 * 10**9,
        128,
        128,
        rng.integers(0, 255, (n, *SIZE, 3), dtype=np.uint8),
    )


@pytest.fixture
def processor():
    emitted, ended = [], []
    p = StreamProcessor(
        make_model(image_size=SIZE, fg_threshold=0.85),
        emitted.append,
        max_batch=8,
        on_end=ended.append,
    )
    return p, emitted, ended


def test_streams_are_stepped_together_in_order_and_end(processor):
    p, emitted, ended = processor
    for sid in ("a", "b", "c"):
        p.on_record(chunk(sid, 0, 4))
    p.on_record(chunk("a", 4, 4))
    assert p.backlog() == 16
    assert p.step_ready() == 3  # one frame of each stream, as one batch
    assert p.backlog() == 13
    p.drain()
    assert p.backlog() == 0
    for sid, n in (("a", 8), ("b", 4), ("c", 4)):
        p.on_record(ControlRecord("end", sid, n))
    frames = {sid: [f.frame_idx for f in emitted if f.stream_id == sid] for sid in "abc"}
    assert frames == {"a": list(range(8)), "b": list(range(4)), "c": list(range(4))}
    assert sorted(ended) == ["a", "b", "c"]


def test_replayed_frames_are_processed_once_and_gaps_are_counted(processor):
    p, emitted, _ = processor
    p.on_record(chunk("a", 0, 4))
    p.drain()
    p.on_record(chunk("a", 2, 4))  # frames 2-3 again, then 4-5
    p.on_record(chunk("a", 9, 2))  # 6-8 never arrive
    p.drain()
    assert [f.frame_idx for f in emitted] == [0, 1, 2, 3, 4, 5, 9, 10]
    assert p.streams["a"].gaps == 1


def test_a_chunk_that_jumps_absurdly_far_is_refused_and_the_stream_goes_on(processor):
    """A chunk far ahead would make every later frame look replayed: the stream would fall
    silent until a reset. It is refused (dead-lettered) instead, as is a prompt that far."""
    p, emitted, _ = processor
    p.on_record(chunk("a", 0, 4))
    with pytest.raises(
        RecordError, match=r"frames of 'a' at frame 1073741828 jump .* past frame 3"
    ):
        p.on_record(chunk("a", 4 + MAX_FRAME_JUMP, 2))
    with pytest.raises(RecordError, match=r"prompt for 'a' names frame 1073741828"):
        p.on_record(PromptRecord("a", 4 + MAX_FRAME_JUMP, [7], np.ones((1, *SIZE), bool)))
    p.on_record(chunk("a", 4 + MAX_FRAME_JUMP - 1, 1))  # a long gap (retention) is a gap
    p.on_record(chunk("b", 2**39, 2))  # a new stream may start anywhere the decoder allows
    p.drain()
    assert [f.frame_idx for f in emitted if f.stream_id == "a"] == [0, 1, 2, 3, 3 + MAX_FRAME_JUMP]
    assert p.streams["a"].gaps == 1 and p.streams["b"].next_frame == 2**39 + 2


def test_prompt_applies_at_its_frame(processor):
    p, emitted, _ = processor
    p.on_record(chunk("a", 0, 6))
    p.on_record(PromptRecord("a", 3, [77], disc_mask(SIZE, 30, 30, 8)[None].numpy()))
    p.drain()
    ids = [(f.frame_idx, 77 in f.prompt_object_ids.tolist()) for f in emitted]
    assert ids[:3] == [(0, False), (1, False), (2, False)] and ids[3] == (3, True)
    # A prompt with no frame index applies after the frames received before it.
    p.on_record(chunk("a", 6, 2))
    p.on_record(PromptRecord("a", None, [78], disc_mask(SIZE, 10, 40, 6)[None].numpy()))
    p.on_record(chunk("a", 8, 2))
    p.drain()
    first = min(f.frame_idx for f in emitted if 78 in f.prompt_object_ids.tolist())
    assert first == 8


def live_chunk(stream, first, n, fps=8):
    """Frames stamped as a camera at ``fps`` would stamp them."""
    c = chunk(stream, first, n)
    c.capture_ts = 1_700_000_000 * 10**9 + np.arange(first, first + n) * (10**9 // fps)
    return c


def test_lag_is_reported_and_skip_to_live_catches_up():
    emitted = []
    p = StreamProcessor(make_model(image_size=SIZE), emitted.append, max_batch=2, max_lag_s=1.0)
    p.on_record(live_chunk("a", 0, 4))
    assert (p.streams["a"].lag_frames, p.streams["a"].lag_s) == (4, 0.375)
    p.drain()  # 0.375 s behind: within max_lag_s, every frame stepped
    assert [f.skipped for f in emitted] == [False] * 4
    p.on_record(live_chunk("a", 4, 20))  # the worker fell 2.4 s behind
    p.on_record(PromptRecord("a", 10, [5], disc_mask(SIZE, 30, 30, 8)[None].numpy()))
    p.on_record(live_chunk("b", 0, 20))
    p.step_ready()
    after = {
        sid: [(f.frame_idx, f.skipped) for f in emitted[4:] if f.stream_id == sid] for sid in "ab"
    }
    # Each stream skipped to its newest frame; skipped frames are emitted, marked, in order.
    assert after["a"] == [(i, True) for i in range(4, 23)] + [(23, False)]
    assert after["b"] == [(i, True) for i in range(19)] + [(19, False)]
    assert (p.streams["a"].skipped, p.streams["a"].lag_frames, p.streams["a"].lag_s) == (19, 0, 0)
    assert all(len(f.track_ids) == 0 for f in emitted if f.skipped)
    live = next(f for f in emitted if f.stream_id == "a" and f.frame_idx == 23)
    assert 5 in live.prompt_object_ids.tolist()  # the prompt of a skipped frame still applies
    p.on_record(live_chunk("a", 24, 4))
    p.drain()
    assert [f.frame_idx for f in emitted if f.stream_id == "a"][-4:] == [24, 25, 26, 27]
    snap = p.snapshot("a", position=0)
    assert (snap.frames_done, snap.skipped, snap.next_frame) == (9, 19, 28)


def test_bad_prompts_and_sizes_are_record_errors(processor):
    p, _, _ = processor
    with pytest.raises(RecordError, match=r"must be \(K, 64, 64\) at the model.s input size"):
        p.on_record(PromptRecord("a", 0, [1], np.ones((1, 32, 32), dtype=bool)))
    p.on_record(chunk("a", 0, 2))
    p.drain()
    with pytest.raises(RecordError, match="already processed"):
        p.on_record(PromptRecord("a", 0, [1], np.ones((1, *SIZE), dtype=bool)))
    big = chunk("a", 2, 1)
    big.frames = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(RecordError, match="model takes 64x64"):
        p.on_record(big)


def test_stream_seeds_are_stable_and_distinct():
    assert stream_seed(0, "cam-1") == stream_seed(0, "cam-1")
    assert stream_seed(0, "cam-1") != stream_seed(0, "cam-2")
    assert stream_seed(0, "cam-1") != stream_seed(1, "cam-1")


def stream_records():
    """Two streams' records as a partition holds them: (offset, record)."""
    recs = [chunk("a", 0, 4), chunk("b", 0, 4)]
    recs.append(PromptRecord("a", 6, [7], disc_mask(SIZE, 30, 30, 8)[None].numpy()))
    recs += [chunk("a", 4, 4), chunk("b", 4, 4)]
    recs.append(PromptRecord("b", None, [9], disc_mask(SIZE, 20, 40, 6)[None].numpy()))
    recs += [chunk("a", 8, 4), chunk("b", 8, 4), ControlRecord("end", "a", 12)]
    recs += [chunk("b", 12, 4), ControlRecord("end", "b", 16)]
    return list(enumerate(recs))


def outputs(emitted):
    return [
        (f.stream_id, f.frame_idx, f.track_ids.tolist(), f.prompt_object_ids.tolist(), f.masks)
        for f in emitted
    ]


@pytest.mark.parametrize("stop_after", [1, 3, 5, 6, 8, 9])
def test_a_stream_resumed_from_its_snapshot_gives_the_same_output(stop_after):
    model = make_model(image_size=SIZE, fg_threshold=0.85)
    straight = []
    p = StreamProcessor(model, straight.append, max_batch=8)
    for offset, rec in stream_records():
        p.on_record(rec, offset)
        p.step_ready()
    p.drain()

    before = []
    p = StreamProcessor(model, before.append, max_batch=8)
    for offset, rec in stream_records()[: stop_after + 1]:
        p.on_record(rec, offset)
        p.step_ready()  # one frame per stream per record: some frames stay queued
    snaps = [p.snapshot(sid, stop_after + 1) for sid in sorted(p.streams)]
    after = []
    resumed = StreamProcessor(model, after.append, max_batch=8)
    for snap in snaps:
        resumed.restore(snap)
    skip = {s.stream_id: s.offset for s in snaps}
    for offset, rec in stream_records()[min(skip.values()) :]:
        if offset >= skip.get(rec.stream_id, 0):
            resumed.on_record(rec, offset)
            resumed.step_ready()
    resumed.drain()
    resume_at = {s.stream_id: s.next_frame for s in snaps}
    done = [f for f in outputs(before) if f[1] < resume_at[f[0]]]
    combined = sorted(done + outputs(after), key=lambda f: (f[0], f[1]))
    expected = sorted(outputs(straight), key=lambda f: (f[0], f[1]))
    assert [f[:4] for f in combined] == [f[:4] for f in expected]
    assert all(np.array_equal(x[4], y[4]) for x, y in zip(combined, expected, strict=True))
    assert done  # the first run got somewhere before it stopped
    assert {sid: s.finished for sid, s in resumed.streams.items()} == {"a": True, "b": True}


def test_a_stream_whose_last_chunk_was_lost_still_ends(processor):
    p, _, ended = processor
    p.on_record(chunk("a", 0, 4))
    p.drain()
    p.on_record(ControlRecord("end", "a", 8))  # frames 4-7 were dead-lettered
    assert ended == ["a"] and p.streams["a"].gaps == 1


def test_prompts_that_cannot_apply_are_record_errors_or_rejected(processor):
    p, _, _ = processor
    empty = np.zeros((2, *SIZE), dtype=bool)
    empty[0, 5, 5] = True
    with pytest.raises(RecordError, match=r"object ids \[2\] are empty"):
        p.on_record(PromptRecord("a", None, [1, 2], empty))
    n_id = p.model.cfg.n_id
    many = np.ones((n_id + 1, *SIZE), dtype=bool)
    with pytest.raises(RecordError, match=f"exceed the ID buffer of {n_id}"):
        p.on_record(PromptRecord("a", None, list(range(n_id + 1)), many))
    # Within the buffer one by one, over it together: rejected when applied, with the reason.
    rejected = []
    p.on_rejected = lambda prompt, reason: rejected.append((prompt.object_ids, reason))
    p.on_record(chunk("a", 0, 2))
    half = np.ones((n_id // 2 + 1, *SIZE), dtype=bool)
    p.on_record(PromptRecord("a", 0, list(range(n_id // 2 + 1)), half))
    p.on_record(PromptRecord("a", 0, list(range(100, 100 + n_id // 2 + 1)), half))
    p.drain()
    assert len(rejected) == 1 and "exceed the ID buffer" in rejected[0][1]


def test_more_ready_streams_than_a_batch_take_turns():
    emitted = []
    p = StreamProcessor(make_model(image_size=SIZE, fg_threshold=0.85), emitted.append, max_batch=2)
    for sid in "abc":
        p.on_record(chunk(sid, 0, 8))
    steps = [sorted(f.stream_id for f in emitted[-n:]) for n in iter(p.step_ready, 0)]
    # Every ready stream is stepped within ceil(3 / 2) = 2 steps, all the way through.
    for one, two in itertools.pairwise(steps):
        assert set(one) | set(two) == {"a", "b", "c"}
    assert {sid: sum(f.stream_id == sid for f in emitted) for sid in "abc"} == dict.fromkeys(
        "abc", 8
    )


def test_a_reset_after_the_end_starts_a_new_life_whose_track_ids_go_on(processor):
    """What the control plane does for a stream added again after removal: frames go on
    from where the old life ended, with a fresh state, and no track id is used twice."""
    p, emitted, ended = processor
    p.on_record(chunk("a", 0, 8))
    mask = disc_mask(SIZE, 30, 30, 10).numpy()[None]
    p.on_record(PromptRecord("a", 0, [5], mask))
    p.drain()
    p.on_record(ControlRecord("end", "a", 8))
    assert ended == ["a"]
    old_ids = {int(t) for f in emitted for t in f.track_ids}
    assert old_ids  # the prompted object was tracked
    p.on_record(ControlRecord("reset", "a", 8))
    p.on_record(PromptRecord("a", 8, [5], mask))
    p.on_record(chunk("a", 8, 4))
    p.drain()
    new = [f for f in emitted if f.frame_idx >= 8]
    assert [f.frame_idx for f in new] == [8, 9, 10, 11]
    new_ids = {int(t) for f in new for t in f.track_ids}
    assert new_ids and min(new_ids) > max(old_ids)
    assert p.streams["a"].frames_done == 4  # counted from the new life
