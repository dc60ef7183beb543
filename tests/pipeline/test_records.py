"""Records round-trip through Arrow IPC and every malformed one is refused with a reason."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ausm_stream.errors import RecordError
from ausm_stream.pipeline import records
from ausm_stream.pipeline.records import ControlRecord, FrameChunk, PromptRecord


def chunk(stream="cam-1", first=0, n=3, size=(16, 24)):
    rng = np.random.default_rng(first)
    return FrameChunk(
        stream,
        np.arange(first, first + n),
        np.arange(n) * 125_000_000,
        1_700_000_000_000_000_000 + np.arange(n),
        480,
        720,
        rng.integers(0, 255, (n, *size, 3), dtype=np.uint8),
    )


def test_frames_round_trip():
    c = chunk(first=8)
    value, kind = records.encode(c)
    back = records.decode(kind, value, key="cam-1", expect_size=(16, 24))
    assert np.array_equal(back.frames, c.frames) and back.frame_idx.tolist() == [8, 9, 10]
    assert back.capture_ts.tolist() == c.capture_ts.tolist()
    assert (back.source_height, back.source_width) == (480, 720)


def test_prompt_and_control_round_trip():
    masks = np.zeros((2, 16, 24), dtype=bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 10:, :4] = True
    value, kind = records.encode(PromptRecord("cam-1", None, [4, 9], masks))
    back = records.decode(kind, value, "cam-1")
    assert back.frame_idx is None and back.object_ids == [4, 9]
    assert np.array_equal(back.masks, masks)
    value, kind = records.encode(ControlRecord("end", "cam-1", 48))
    assert records.decode(kind, value, "cam-1") == ControlRecord("end", "cam-1", 48)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda v: v[: len(v) // 2], "not a readable Arrow IPC stream"),
        (lambda v: b"garbage" * 10, "not a readable Arrow IPC stream"),
    ],
)
def test_corrupt_bytes(damage, message):
    value, _ = records.encode(chunk())
    with pytest.raises(RecordError, match=message):
        records.decode("frames", damage(value), "cam-1")


def test_semantic_checks():
    value, _ = records.encode(chunk())
    with pytest.raises(RecordError, match="model takes 32x32"):
        records.decode("frames", value, "cam-1", expect_size=(32, 32))
    with pytest.raises(RecordError, match="under key 'cam-2'"):
        records.decode("frames", value, "cam-2")
    with pytest.raises(RecordError, match="unknown record kind"):
        records.decode(None, value, "cam-1")
    bad = chunk()
    bad.frame_idx = np.array([0, 2, 3])
    with pytest.raises(RecordError, match="consecutive"):
        records.decode("frames", records.encode(bad)[0], "cam-1")
    batch = pa.ipc.open_stream(pa.py_buffer(value)).read_next_batch()
    rgb = batch.schema.get_field_index("rgb")
    short = batch.set_column(rgb, "rgb", pa.array([b"x"] * 3, pa.binary()))
    with pytest.raises(RecordError, match="rgb has"):
        records.decode("frames", records.to_ipc(short), "cam-1")
    top = batch.schema.get_field_index("content_top")
    off = batch.set_column(top, "content_top", pa.array([1] * 3, pa.int32()))
    with pytest.raises(RecordError, match=r"content box top=1 .* does not fit"):
        records.decode("frames", records.to_ipc(off), "cam-1")
    # a chunk from a producer that predates the content box fills the input
    legacy = batch.drop_columns(["content_top", "content_left", "content_height", "content_width"])
    old = records.decode("frames", records.to_ipc(legacy), "cam-1")
    assert old.content == (0, 0, 16, 24) and np.array_equal(old.frames, chunk().frames)
    with pytest.raises(RecordError, match="schema does not match"):
        records.decode("prompt", value, "cam-1")
