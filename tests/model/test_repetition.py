"""Offline clips: ``segment_clip``, with and without test-time repetition (paper Sec. 3.4)."""

from __future__ import annotations

import dataclasses

import torch

from ausm_stream.model import AUSM
from tests.conftest import disc_mask, make_frames, make_model


def test_without_repetition_a_clip_is_the_stream_of_its_frames():
    model = make_model(fg_threshold=0.85)
    frames = make_frames(5, seed=3)
    prompts = {2: (disc_mask(model.cfg.image_size, 50, 60, 12)[None], [9])}
    clip = model.segment_clip(frames, model.init_state(seed=1), prompts)
    stream = list(model.iter_video(frames, model.init_state(seed=1), prompts))
    assert [r.frame_index for r in clip] == list(range(5))
    for a, b in zip(clip, stream, strict=True):
        assert torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.track_ids, b.track_ids)
    assert 9 in clip[2].prompt_object_ids.tolist()


def test_repetition_runs_forward_backward_forward_and_keeps_the_last_pass():
    model = make_model(fg_threshold=0.85, test_time_repetition=True)
    frames = make_frames(4, seed=5)
    prompts = {0: (disc_mask(model.cfg.image_size, 40, 40, 14)[None], [3])}
    got = model.segment_clip(frames, model.init_state(seed=2), prompts)
    plain = dataclasses.replace(model.cfg, test_time_repetition=False)
    manual = AUSM(plain).eval()
    manual.load_state_dict(model.state_dict())
    state = manual.init_state(seed=2)
    manual.add_prompt(state, *prompts[0])
    for i in [0, 1, 2, 3, 2, 1, 0]:
        manual.step([state], frames[i : i + 1])
    want = [manual.step([state], frames[i : i + 1])[0] for i in range(4)]
    assert [r.frame_index for r in got] == [0, 1, 2, 3]
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.track_ids, b.track_ids)
    assert all(3 in r.prompt_object_ids.tolist() for r in got)  # the prompt carries through
