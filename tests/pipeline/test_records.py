"""Records round-trip through Arrow IPC and every malformed one is refused with a reason."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pytest

from ausm_stream.errors import RecordError
from ausm_stream.pipeline import records
from ausm_stream.pipeline.records import ControlRecord, FrameChunk, PromptRecord
from tests.pipeline.test_ids import HOSTILE_IDS
from tests.poison import prompt_value


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


# -- poison records: every declared size is bounded before anything is decompressed ---------
MiB = 1 << 20
ZSTD_MAGIC = bytes.fromhex("28b52ffd")
POOLS: list[pa.MemoryPool] = []
"""Every pool :func:`allocations` made, alive until the end: what a failed decode allocated
through one is freed with the test's report, after the block."""


@contextmanager
def allocations() -> Iterator[list[int]]:
    """The peak bytes allocated inside the block (appended on leaving it): Python and numpy's
    (``tracemalloc``) plus Arrow's (a proxy of its default pool, which decompression uses)."""
    old = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(old)
    POOLS.append(pool)
    pa.set_memory_pool(pool)
    tracemalloc.start()
    peak: list[int] = []
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1] + pool.max_memory())
        tracemalloc.stop()
        pa.set_memory_pool(old)


def frames_batch(n=1, size=(16, 24), stream="cam-1") -> pa.RecordBatch:
    value, _ = records.encode(chunk(stream, n=n, size=size))
    return pa.ipc.open_stream(pa.py_buffer(value)).read_next_batch()


def with_column_batch(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    return batch.set_column(batch.schema.get_field_index(name), name, values)


def with_column(batch: pa.RecordBatch, name: str, values: pa.Array) -> bytes:
    return records.to_ipc(with_column_batch(batch, name, values))


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """An 18 KiB frames record of one 16x24 frame whose ``rgb`` value inflates to 512 MiB
    (zstd of zeros): what a broken or hostile producer can send within any message limit."""
    zeros = np.zeros(512 * MiB, np.uint8)  # calloc'd: its pages are never touched
    rgb = pa.Array.from_buffers(
        pa.binary(),
        1,
        [None, pa.py_buffer(np.array([0, zeros.size], np.int32)), pa.py_buffer(zeros)],
    )
    return with_column(frames_batch(), "rgb", rgb)


@pytest.mark.parametrize("expect", [(16, 24), None])
def test_a_frames_record_that_inflates_to_512_mib_is_refused_before_it_is_decompressed(
    bomb, expect
):
    assert len(bomb) < 32 * 1024
    with allocations() as peak, pytest.raises(RecordError) as refused:
        records.decode("frames", bomb, "cam-1", expect)
    assert peak[0] < 4 * MiB, f"{peak[0] / MiB:.0f} MiB allocated before refusing"
    reason = str(refused.value)
    assert "frames of 'cam-1' at frame 0" in reason and "rgb declares 536870912 bytes" in reason
    assert "1 frame of 16x24x3 needs 1152" in reason


def test_a_column_declaring_more_bytes_than_its_rows_need_is_refused_unread():
    """Arrow's body compression puts each buffer's uncompressed length before its zstd frame;
    the reader allocates that length, so a record can claim any size for any column."""
    value, _ = records.encode(chunk(n=3))
    frames = [i for i in range(len(value)) if value.startswith(ZSTD_MAGIC, i)]
    at = frames[5] - 8  # stream_id's offsets and data, frame_idx, pts_ns, capture_ts, height
    assert int.from_bytes(value[at : at + 8], "little") == 3 * 4
    lying = value[:at] + (512 * MiB).to_bytes(8, "little") + value[at + 8 :]
    with allocations() as peak, pytest.raises(RecordError, match=r"'height' declares 536870912"):
        records.decode("frames", lying, "cam-1", (16, 24))
    assert peak[0] < 4 * MiB


@pytest.mark.parametrize(
    "expect, message",
    [
        ((16, 24), "masks are 16000x16000, the model takes 16x24"),
        (None, "masks are 16000x16000, at most 2048x2048"),
    ],
)
def test_a_prompt_with_masks_bigger_than_the_model_is_refused_before_they_are_decoded(
    expect, message
):
    value = prompt_value(4, 16000, 16000)  # 1.2 KB; decoded, 1.95 GiB
    assert len(value) < 2048
    with allocations() as peak, pytest.raises(RecordError, match=f"prompt for 'cam-1': {message}"):
        records.decode("prompt", value, "cam-1", expect)
    assert peak[0] < 4 * MiB
    back = records.decode("prompt", prompt_value(2, 16, 24), "cam-1", (16, 24))
    assert back.masks.shape == (2, 16, 24) and back.masks.sum() == 2 * 10


def test_a_source_size_beyond_16384_is_refused():
    batch = frames_batch(n=2)
    huge = pa.array([50_000_000] * 2, pa.int32())
    value = with_column(with_column_batch(batch, "source_height", huge), "source_width", huge)
    with (
        allocations() as peak,
        pytest.raises(
            RecordError,
            match=r"frames of 'cam-1' at frame 0: source size 50000000x50000000, "
            r"at most 16384x16384",
        ),
    ):
        records.decode("frames", value, "cam-1", (16, 24))
    assert peak[0] < 4 * MiB
    edge = pa.array([16384] * 2, pa.int32())
    value = with_column(with_column_batch(batch, "source_height", edge), "source_width", edge)
    assert records.decode("frames", value, "cam-1", (16, 24)).source_height == 16384


def test_records_with_more_rows_than_one_holds_are_refused_before_decompressing():
    many = records.encode(chunk(n=records.MAX_CHUNK_FRAMES + 1, size=(2, 2)))[0]
    with pytest.raises(RecordError, match=f"frames record holds {records.MAX_CHUNK_FRAMES + 1} "):
        records.decode("frames", many, "cam-1", (2, 2))
    assert len(records.decode("frames", records.encode(chunk(n=8, size=(2, 2)))[0])) == 8
    objects = prompt_value(records.MAX_PROMPT_OBJECTS + 1, 16, 24)
    with pytest.raises(RecordError, match=f"prompt record holds {records.MAX_PROMPT_OBJECTS + 1} "):
        records.decode("prompt", objects, "cam-1", (16, 24))
    two = pa.record_batch(
        [pa.array(["cam-1"] * 2), pa.array([4, 4], pa.int64())], schema=records.CONTROL_SCHEMA
    )
    with pytest.raises(RecordError, match="end record holds 2 rows, at most 1"):
        records.decode("end", records.to_ipc(two), "cam-1")


def test_frame_indexes_no_camera_reaches_are_refused():
    far = records.MAX_FRAME_INDEX
    with pytest.raises(RecordError, match=r"frame_idx .* beyond"):
        records.decode("frames", records.encode(chunk(first=2**62))[0], "cam-1")
    masks = np.ones((1, 16, 24), bool)
    for record in (
        PromptRecord("cam-1", far + 1, [1], masks),
        ControlRecord("reset", "cam-1", 2**62),
        ControlRecord("end", "cam-1", far + 1),
    ):
        value, kind = records.encode(record)
        with pytest.raises(RecordError, match=r"frame_idx .* beyond"):
            records.decode(kind, value, "cam-1", (16, 24))
    value, kind = records.encode(ControlRecord("reset", "cam-1", far))
    assert records.decode(kind, value, "cam-1").frame_idx == far


# -- stream ids ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_hostile_stream_ids_are_refused_as_keys_and_in_records(bad):
    good, _ = records.encode(chunk())
    with pytest.raises(RecordError, match=r"key .* is not a stream id"):
        records.decode("frames", good, bad, (16, 24))
    masks = np.ones((1, 16, 24), bool)
    for record in (
        chunk(stream=bad),
        PromptRecord(bad, None, [1], masks),
        ControlRecord("end", bad, 3),
        ControlRecord("reset", bad, 0),
    ):
        value, kind = records.encode(record)
        with pytest.raises(RecordError, match=f"{kind} record: stream id .* use 1-128"):
            records.decode(kind, value, None, (16, 24))
