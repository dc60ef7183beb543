"""Stream state: fixed size, safetensors round trip, refusal of foreign or corrupt blobs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ausm_stream.errors import StateError
from ausm_stream.model import AUSM, AUSMConfig, StreamState
from ausm_stream.model.state import safetensors_metadata
from tests.conftest import disc_mask, make_frames


def test_state_size_is_constant_over_1000_frames(tiny_model):
    state = tiny_model.init_state(seed=3)
    frames = make_frames(8, seed=4)
    sizes = {}
    for t in range(1000):
        if t == 500:  # prompts queued and applied along the way do not change the size either
            tiny_model.add_prompt(
                state, disc_mask(tiny_model.cfg.image_size, 64, 64, 10)[None], [9]
            )
        tiny_model.step([state], frames[t % 8 : t % 8 + 1])
        if t + 1 in (10, 1000):
            sizes[t + 1] = len(state.to_bytes())
    assert state.frames_seen == 1000
    assert sizes[10] == sizes[1000]
    assert sizes[10] == len(tiny_model.init_state().to_bytes())


def test_round_trip_gives_bit_identical_next_outputs(tiny_model):
    model = tiny_model
    frames = make_frames(6, seed=5)
    state = model.init_state(seed=8)
    model.add_prompt(state, disc_mask(model.cfg.image_size, 50, 60, 15)[None], [4])
    for t in range(4):
        model.step([state], frames[t : t + 1])
    # A prompt still queued when the state is saved travels with it.
    model.add_prompt(state, disc_mask(model.cfg.image_size, 90, 30, 9)[None], [6])
    restored = StreamState.from_bytes(state.to_bytes(), model.cfg)
    for t in (4, 5):
        a = model.step([state], frames[t : t + 1])[0]
        b = model.step([restored], frames[t : t + 1])[0]
        assert torch.equal(a.mask_logits, b.mask_logits)
        assert torch.equal(a.class_logits, b.class_logits)
        assert torch.equal(a.masks, b.masks)
        assert torch.equal(a.track_ids, b.track_ids)
        assert torch.equal(a.prompt_object_ids, b.prompt_object_ids)
    # The queued prompt was installed from the restored state too (its track may be unseen).
    assert 6 in restored.slot_object_id[restored.slot_active].tolist()
    assert torch.equal(restored.slot_object_id, state.slot_object_id)
    # Same contents after the same steps, down to the byte.
    assert restored.to_bytes() == state.to_bytes()


def test_the_same_state_always_gives_the_same_bytes(tiny_model):
    state = tiny_model.init_state(seed=4)
    tiny_model.step([state], torch.zeros(1, 128, 128, 3, dtype=torch.uint8))
    blobs = {state.to_bytes() for _ in range(8)}  # the metadata map alone used to vary
    assert len(blobs) == 1
    again = StreamState.from_bytes(blobs.pop(), tiny_model.cfg)
    assert again.to_bytes() == state.to_bytes()


def test_blob_from_another_config_is_refused(tiny_model):
    blob = tiny_model.init_state().to_bytes()
    other = AUSMConfig.preset("tiny", compressor_layers=3)
    with pytest.raises(ValueError, match="another model config"):
        StreamState.from_bytes(blob, other)
    # Runtime knobs do not change the state layout: such a config reads the blob.
    relaxed = AUSMConfig.preset("tiny", fg_threshold=0.7, max_missing=3)
    assert StreamState.from_bytes(blob, relaxed).frames_seen == 0


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "corrupt"),
        (lambda b: b[:-100] + bytes(x ^ 0xFF for x in b[-100:]), "checksum"),
        (lambda b: b"\x00" * 4, "too short"),
        (lambda b: b"not a state at all, just some bytes", "corrupt"),
    ],
)
def test_corrupted_blobs_are_refused(tiny_model, damage, message):
    blob = tiny_model.init_state().to_bytes()
    with pytest.raises(StateError, match=message):
        StreamState.from_bytes(damage(blob), tiny_model.cfg)


def test_state_moves_between_devices_and_keeps_counters(tiny_model):
    state = tiny_model.init_state(seed=99)
    copy = state.to("cpu")
    assert copy.seed == 99 and copy is not state
    assert all(
        torch.equal(a, b)
        for a, b in zip(state.tensors().values(), copy.tensors().values(), strict=True)
    )


def test_model_refuses_state_of_another_config(tiny_model):
    other = AUSM(AUSMConfig.preset("tiny", n_id=8)).eval()
    with pytest.raises(ValueError, match="another model config"):
        tiny_model.step([other.init_state()], make_frames(1))


def test_a_blob_of_an_older_state_format_is_refused(tiny_model):
    """Version 5 added ``slot_age``; older blobs are not migrated."""
    blob = tiny_model.init_state().to_bytes()
    older = st_save(st_load(blob), metadata={**safetensors_metadata(blob), "version": "4"})
    with pytest.raises(StateError, match="version '4' is not supported"):
        StreamState.from_bytes(older, tiny_model.cfg)
