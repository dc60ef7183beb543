"""Arrow schemas of the input wire records, with encoders and validating decoders.

One Kafka message = one Arrow IPC stream holding one record batch, zstd-compressed by Arrow
IPC; the Kafka header ``ausm-kind`` says which schema it carries:

- ``frames``: a chunk of consecutive frames of one stream (SYSTEM.md). We add
  ``source_height`` / ``source_width`` and the content box ``content_top``, ``content_left``,
  ``content_height``, ``content_width``: ingest fits frames into the model's input
  (:mod:`.geometry`: letterboxed by default), and the track records report masks, boxes and
  areas in the source's terms.
- ``prompt``: objects to track, one row per object, applied at ``frame_idx`` (null: the next
  frame the worker steps). Masks are COCO RLE at the model's input size.
- ``end``: the stream is over; ``frame_idx`` is the number of frames it had.
- ``reset``: forget the stream's state; its next frame starts from scratch.

Prompts and control records travel in the frames topic under the stream's key, so they are
ordered with the frames they refer to. Decoders check everything and raise
:class:`RecordError` with the reason, which the worker sends to the dead-letter topic. A
record's size is what it declares, not what it weighs (an 18 KiB zstd record can inflate to
hundreds of MiB): every size is bounded (the ``MAX_*`` limits below, ``rows x H x W x 3``
for frames) before anything is decompressed (:mod:`.ipc`), and a large column is read only
after the columns that bound it. Stream ids, in keys and records, follow :mod:`.ids`.
What the worker writes (the track rows and the frames table) is in :mod:`.tracks`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ausm_stream import rle
from ausm_stream.errors import InvalidInputError, RecordError
from ausm_stream.pipeline import ipc
from ausm_stream.pipeline.geometry import Placement
from ausm_stream.pipeline.ids import MAX_STREAM_ID_LENGTH, STREAM_ID_RULE, is_stream_id, shown
from ausm_stream.pipeline.ipc import IpcRecord

KIND_HEADER = "ausm-kind"
Kind = Literal["frames", "prompt", "end", "reset"]


# -- what a record may declare: checked before anything of it is decompressed -----------------
MAX_CHUNK_FRAMES = 256
"""Frames one frames record holds at most (ingest sends ``ingest.chunk_frames``, 8 by
default). With the frame size, it bounds what decoding a chunk allocates."""

MAX_PROMPT_OBJECTS = 256
"""Objects one prompt record names at most: more than any model's ID buffer
(``AUSMConfig.n_id``, 100 in the paper preset), which the worker then checks."""

MAX_CONTROL_ROWS = 1
"""Rows of an end or reset record: one."""

MAX_INPUT_SIDE = 2048
"""Largest side of a frame or prompt mask at the model's input, when the reader does not
know the model's size (the worker does, and requires it exactly)."""

MAX_SOURCE_SIDE = 16384
"""Largest side of the source frame a chunk may declare: the worker builds arrays of the
source size when it writes a track's box and area (:func:`~.tracks.source_extent`)."""

MAX_FRAME_INDEX = 1 << 40
"""Highest frame index a record may name (145 years at 240 fps). A chunk far ahead would make
every later frame of its stream look like a replay (see also the processor's
``MAX_FRAME_JUMP``)."""

FRAME_KEY = [
    pa.field("stream_id", pa.utf8()),
    pa.field("frame_idx", pa.int64()),
    pa.field("pts_ns", pa.int64()),
    pa.field("capture_ts", pa.timestamp("ns", tz="UTC")),
]
"""Which frame a row is about: the leading columns of frame chunks, tracks and the frames table."""

FRAMES_SCHEMA = pa.schema(
    [
        *FRAME_KEY,
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("source_height", pa.int32()),
        ("source_width", pa.int32()),
        ("content_top", pa.int32()),
        ("content_left", pa.int32()),
        ("content_height", pa.int32()),
        ("content_width", pa.int32()),
        ("rgb", pa.binary()),
    ]
)

FRAMES_SCHEMA_NO_CONTENT = pa.schema(
    [f for f in FRAMES_SCHEMA if not f.name.startswith("content_")]
)
"""Frame chunks of producers from before letterboxing (no content box): read as frames
that fill the input, so records still in the topic after an upgrade are not lost."""

PROMPT_SCHEMA = pa.schema(
    [
        ("stream_id", pa.utf8()),
        ("frame_idx", pa.int64()),  # nullable: the next frame
        ("object_id", pa.int64()),
        ("mask_rle", pa.binary()),
        ("mask_height", pa.int32()),
        ("mask_width", pa.int32()),
    ]
)

CONTROL_SCHEMA = pa.schema([("stream_id", pa.utf8()), ("frame_idx", pa.int64())])

NULLABLE = {"prompt": {"frame_idx"}}
"""Columns that may hold nulls, per record kind; every other column must not."""

SCHEMAS: dict[str, pa.Schema] = {
    "frames": FRAMES_SCHEMA,
    "prompt": PROMPT_SCHEMA,
    "end": CONTROL_SCHEMA,
    "reset": CONTROL_SCHEMA,
}


@dataclass
class FrameChunk:
    stream_id: str
    frame_idx: np.ndarray  # (n,) int64, consecutive
    pts_ns: np.ndarray  # (n,) int64
    capture_ts: np.ndarray  # (n,) int64 ns since the epoch, UTC
    source_height: int
    source_width: int
    frames: np.ndarray  # (n, H, W, 3) uint8
    content: tuple[int, int, int, int] | None = None
    """Where the source frame lies on the model input: top, left, height, width
    (:class:`~.geometry.Placement`); ``None``: the whole frame (stretched)."""

    @property
    def placement(self) -> Placement:
        size = (self.source_height, self.source_width)
        model = self.frames.shape[1:3]
        if self.content is None:
            return Placement.whole(size, model)
        return Placement(size, model, *self.content)

    @property
    def first(self) -> int:
        return int(self.frame_idx[0])

    def __len__(self) -> int:
        return int(self.frame_idx.shape[0])


@dataclass
class PromptRecord:
    stream_id: str
    frame_idx: int | None
    object_ids: list[int]
    masks: np.ndarray  # (K, H, W) bool


@dataclass
class ControlRecord:
    kind: Literal["end", "reset"]
    stream_id: str
    frame_idx: int


Record = FrameChunk | PromptRecord | ControlRecord


# -- encoding ------------------------------------------------------------------------------
def to_ipc(batch: pa.RecordBatch, compression: str | None = "zstd") -> bytes:
    """One Arrow IPC stream holding ``batch``; readers detect the compression themselves."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def encode_frames(chunk: FrameChunk) -> bytes:
    n, h, w, c = chunk.frames.shape
    if chunk.frames.dtype != np.uint8 or c != 3:
        raise InvalidInputError("frames must be (n, H, W, 3) uint8")
    rgb = pa.array([f.tobytes() for f in chunk.frames], type=pa.binary())
    content = chunk.placement.content
    return to_ipc(
        pa.record_batch(
            [
                pa.array([chunk.stream_id] * n, pa.utf8()),
                pa.array(chunk.frame_idx, pa.int64()),
                pa.array(chunk.pts_ns, pa.int64()),
                pa.array(chunk.capture_ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
                pa.array([h] * n, pa.int32()),
                pa.array([w] * n, pa.int32()),
                pa.array([chunk.source_height] * n, pa.int32()),
                pa.array([chunk.source_width] * n, pa.int32()),
                *(pa.array([v] * n, pa.int32()) for v in content),
                rgb,
            ],
            schema=FRAMES_SCHEMA,
        )
    )


def encode_prompt(prompt: PromptRecord) -> bytes:
    k, h, w = prompt.masks.shape
    return to_ipc(
        pa.record_batch(
            [
                pa.array([prompt.stream_id] * k, pa.utf8()),
                pa.array([prompt.frame_idx] * k, pa.int64()),
                pa.array(prompt.object_ids, pa.int64()),
                pa.array(rle.encode(prompt.masks), pa.binary()),
                pa.array([h] * k, pa.int32()),
                pa.array([w] * k, pa.int32()),
            ],
            schema=PROMPT_SCHEMA,
        )
    )


def encode_control(record: ControlRecord) -> bytes:
    return to_ipc(
        pa.record_batch(
            [pa.array([record.stream_id], pa.utf8()), pa.array([record.frame_idx], pa.int64())],
            schema=CONTROL_SCHEMA,
        )
    )


def encode(record: Record) -> tuple[bytes, str]:
    """(message value, kind header) of any record."""
    if isinstance(record, FrameChunk):
        return encode_frames(record), "frames"
    if isinstance(record, PromptRecord):
        return encode_prompt(record), "prompt"
    return encode_control(record), record.kind


# -- decoding ------------------------------------------------------------------------------
def open_record(
    value: bytes,
    schemas: tuple[pa.Schema, ...],
    kind: str,
    max_rows: int,
    value_bytes: Mapping[str, int] | None = None,
    nullable: Collection[str] | None = None,
) -> IpcRecord:
    """The one record batch of an Arrow IPC message, checked against ``schemas`` and bounded
    (:func:`~.ipc.open_record`: at most ``max_rows`` rows, every buffer within what its rows
    need, nothing decompressed yet); only the ``nullable`` columns (default: the kind's,
    :data:`NULLABLE`) may hold nulls. A stream id holds at most
    :data:`~.ids.MAX_STREAM_ID_LENGTH` bytes."""
    nullable = NULLABLE.get(kind, set()) if nullable is None else nullable
    caps = {"stream_id": MAX_STREAM_ID_LENGTH, **(value_bytes or {})}
    return ipc.open_record(value, schemas, kind, max_rows, caps, nullable)


def _check_key(key: str | None, kind: str) -> None:
    if key is not None and not is_stream_id(key):
        raise RecordError(f"{kind} record's key {shown(key)} is not a stream id: {STREAM_ID_RULE}")


def _single_stream(batch: pa.RecordBatch, kind: str, key: str | None) -> str:
    ids = set(batch.column("stream_id").to_pylist())
    if len(ids) != 1:
        raise RecordError(f"{kind} record mixes streams {shown(sorted(ids))}")
    (stream_id,) = ids
    if not is_stream_id(stream_id):
        raise RecordError(f"{kind} record: stream id {shown(stream_id)}: {STREAM_ID_RULE}")
    if key is not None and key != stream_id:
        raise RecordError(f"{kind} record for stream {stream_id!r} arrived under key {key!r}")
    return stream_id


def _one(batch: pa.RecordBatch, name: str, what: str) -> int:
    """The one value a column holds in every row of a record."""
    values = set(batch.column(name).to_pylist())
    if len(values) != 1:
        raise RecordError(f"{what}: one record must have one {name}, got {sorted(values)}")
    return int(values.pop())


def _check_frame_index(frame_idx: int, what: str) -> None:
    if frame_idx > MAX_FRAME_INDEX:
        raise RecordError(
            f"{what}: frame_idx {frame_idx} is beyond {MAX_FRAME_INDEX} (MAX_FRAME_INDEX), "
            "more frames than a stream ever has"
        )


def _check_input_size(h: int, w: int, expect: tuple[int, int] | None, sized: str) -> None:
    """A frame or mask size at the model's input: ``expect`` exactly when known. ``sized``
    says what has the size, for the message (``"prompt for 'cam-7': masks are 64x64"``)."""
    if h <= 0 or w <= 0:
        raise RecordError(f"{sized}: sizes must be positive")
    if expect is not None and (h, w) != tuple(expect):
        raise RecordError(f"{sized}, the model takes {expect[0]}x{expect[1]}")
    if h > MAX_INPUT_SIDE or w > MAX_INPUT_SIDE:
        raise RecordError(f"{sized}, at most {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE}")


def decode_frames(
    value: bytes, key: str | None = None, expect_size: tuple[int, int] | None = None
) -> FrameChunk:
    """A frames record, checked; ``expect_size``: the model's input (H, W), which every
    frame must have. Its ``rgb`` column is read last, once the frame size and the rows it
    declares bound it (``rows x H x W x 3`` bytes)."""
    _check_key(key, "frames")
    record = open_record(
        value, (FRAMES_SCHEMA, FRAMES_SCHEMA_NO_CONTENT), "frames", MAX_CHUNK_FRAMES
    )
    batch = record.read([n for n in record.schema.names if n != "rgb"])
    stream_id = _single_stream(batch, "frames", key)
    idx = batch.column("frame_idx").to_numpy()
    if idx[0] < 0 or np.any(np.diff(idx) != 1):
        raise RecordError(
            f"frames of {stream_id!r}: frame_idx must be consecutive from >= 0, got {idx.tolist()}"
        )
    where = f"frames of {stream_id!r} at {first_idx(idx)}"
    _check_frame_index(int(idx[-1]), where)
    what = f"frames of {stream_id!r}"
    h, w = _one(batch, "height", what), _one(batch, "width", what)
    _check_input_size(h, w, expect_size, f"{where}: {h}x{w} frames")
    src_h, src_w = _one(batch, "source_height", what), _one(batch, "source_width", what)
    if src_h <= 0 or src_w <= 0 or src_h > MAX_SOURCE_SIDE or src_w > MAX_SOURCE_SIDE:
        raise RecordError(
            f"{where}: source size {src_h}x{src_w}, at most {MAX_SOURCE_SIDE}x{MAX_SOURCE_SIDE} "
            "(and positive)"
        )
    content = [0, 0, h, w]  # a chunk without a content box fills the input
    for i, name in enumerate(("content_top", "content_left", "content_height", "content_width")):
        if name in batch.schema.names:
            content[i] = _one(batch, name, what)
    try:
        placement = Placement((src_h, src_w), (h, w), *content)
    except InvalidInputError as exc:
        raise RecordError(f"{where}: {exc}") from None
    n, frame_bytes = len(idx), h * w * 3
    frames_need = f"{n} frame{'s' if n > 1 else ''} of {h}x{w}x3 need{'s' if n == 1 else ''}"
    record.bound("rgb", n * frame_bytes, where, f"{frames_need} {n * frame_bytes}")
    rgb = record.read(["rgb"]).column("rgb")
    lengths = set(pc.binary_length(rgb).to_pylist())
    if lengths != {frame_bytes}:
        raise RecordError(
            f"{where}: rgb has {sorted(lengths)} bytes, {h}x{w}x3 needs {frame_bytes}"
        )
    _, offsets, values = rgb.buffers()
    start = int(np.frombuffer(offsets, np.int32, count=1, offset=4 * rgb.offset)[0])
    data = np.frombuffer(values, np.uint8, count=n * frame_bytes, offset=start)
    return FrameChunk(
        stream_id=stream_id,
        frame_idx=idx.astype(np.int64),
        pts_ns=batch.column("pts_ns").to_numpy().astype(np.int64),
        capture_ts=batch.column("capture_ts").cast(pa.int64()).to_numpy().astype(np.int64),
        source_height=src_h,
        source_width=src_w,
        frames=data.reshape(n, h, w, 3).copy(),  # its own memory, not the record's
        content=placement.content,
    )


def first_idx(idx: np.ndarray) -> str:
    return f"frame {int(idx[0])}" if idx.size else "?"


def rle_bytes_at_most(height: int, width: int) -> int:
    """Bytes the COCO RLE string of a ``height x width`` mask takes at most: at most one run
    a pixel (and one more), each a character plus one per 5 bits of its change from the run
    two before, so under 2 bytes a pixel."""
    return 2 * height * width + 16


def decode_prompt(
    value: bytes, key: str | None = None, expect_size: tuple[int, int] | None = None
) -> PromptRecord:
    """A prompt record, checked; ``expect_size``: the model's input (H, W), the size every
    mask must have. The masks' RLE is read and decoded only once their size is checked."""
    _check_key(key, "prompt")
    record = open_record(value, (PROMPT_SCHEMA,), "prompt", MAX_PROMPT_OBJECTS)
    batch = record.read([n for n in PROMPT_SCHEMA.names if n != "mask_rle"])
    stream_id = _single_stream(batch, "prompt", key)
    what = f"prompt for {stream_id!r}"
    at = set(batch.column("frame_idx").to_pylist())
    if len(at) != 1:
        raise RecordError(f"{what}: all objects must share one frame_idx")
    (frame_idx,) = at
    if frame_idx is not None and frame_idx < 0:
        raise RecordError(f"{what}: frame_idx {frame_idx} < 0")
    if frame_idx is not None:
        _check_frame_index(frame_idx, what)
    ids = batch.column("object_id").to_pylist()
    if len(set(ids)) != len(ids) or min(ids) < 0:
        raise RecordError(f"{what}: object ids must be distinct and >= 0")
    h, w = _one(batch, "mask_height", what), _one(batch, "mask_width", what)
    _check_input_size(h, w, expect_size, f"{what}: masks are {h}x{w}")
    k, most = len(ids), rle_bytes_at_most(h, w)
    record.bound("mask_rle", k * most, what, f"{k} masks of {h}x{w} take at most {k * most}")
    counts = record.read(["mask_rle"]).column("mask_rle").to_pylist()
    try:
        masks = np.stack([rle.decode(c, h, w) for c in counts])
    except (InvalidInputError, ValueError) as exc:
        raise RecordError(f"{what}: {exc}") from exc
    return PromptRecord(stream_id, frame_idx, [int(i) for i in ids], masks)


def decode_control(
    value: bytes, kind: Literal["end", "reset"], key: str | None = None
) -> ControlRecord:
    _check_key(key, kind)
    batch = open_record(value, (CONTROL_SCHEMA,), kind, MAX_CONTROL_ROWS).read()
    stream_id = _single_stream(batch, kind, key)
    frame_idx = batch.column("frame_idx")[0].as_py()
    if frame_idx is None or frame_idx < 0:
        raise RecordError(f"{kind} record for {stream_id!r}: frame_idx must be >= 0")
    _check_frame_index(frame_idx, f"{kind} record for {stream_id!r}")
    return ControlRecord(kind, stream_id, int(frame_idx))


def decode(
    kind: str | None,
    value: bytes,
    key: str | None = None,
    expect_size: tuple[int, int] | None = None,
) -> Record:
    """Decode any record by its ``ausm-kind`` header; :class:`RecordError` when invalid.
    ``key``: the Kafka key it came under (a stream id, which the record's must equal);
    ``expect_size``: the model's input size, which frames and prompt masks must have."""
    if kind == "frames":
        return decode_frames(value, key, expect_size)
    if kind == "prompt":
        return decode_prompt(value, key, expect_size)
    if kind in ("end", "reset"):
        return decode_control(value, kind, key)
    raise RecordError(
        f"unknown record kind {shown(kind)} (header {KIND_HEADER!r} missing or wrong)"
    )
