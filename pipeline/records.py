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
:class:`RecordError` with the reason, which the worker sends to the dead-letter topic.
What the worker writes (the track rows and the frames table) is in :mod:`.tracks`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from ausm_stream import rle
from ausm_stream.errors import InvalidInputError, RecordError
from ausm_stream.pipeline.geometry import Placement

KIND_HEADER = "ausm-kind"
Kind = Literal["frames", "prompt", "end", "reset"]

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
def from_ipc(
    value: bytes,
    schema: pa.Schema | tuple[pa.Schema, ...],
    kind: str,
    nullable: Collection[str] | None = None,
) -> pa.RecordBatch:
    """The one record batch of an Arrow IPC message, checked against ``schema`` (or one of
    several); only the ``nullable`` columns (default: the kind's, :data:`NULLABLE`) may
    hold nulls."""
    schemas = schema if isinstance(schema, tuple) else (schema,)
    nullable = NULLABLE.get(kind, set()) if nullable is None else nullable
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(value))
        batches = list(reader)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise RecordError(f"{kind} record is not a readable Arrow IPC stream: {exc}") from exc
    if len(batches) != 1:
        raise RecordError(f"{kind} record must hold one record batch, found {len(batches)}")
    batch = batches[0]
    if not any(batch.schema.equals(s) for s in schemas):
        raise RecordError(f"{kind} record schema does not match: got {batch.schema}")
    if batch.num_rows == 0:
        raise RecordError(f"{kind} record is empty")
    for name in batch.schema.names:
        if name not in nullable and batch.column(name).null_count:
            raise RecordError(f"{kind} record has nulls in {name!r}")
    return batch


def _single_stream(batch: pa.RecordBatch, kind: str, key: str | None) -> str:
    ids = set(batch.column("stream_id").to_pylist())
    if len(ids) != 1:
        raise RecordError(f"{kind} record mixes streams {sorted(ids)}")
    (stream_id,) = ids
    if not stream_id:
        raise RecordError(f"{kind} record has an empty stream_id")
    if key is not None and key != stream_id:
        raise RecordError(f"{kind} record for stream {stream_id!r} arrived under key {key!r}")
    return stream_id


def decode_frames(
    value: bytes, key: str | None = None, expect_size: tuple[int, int] | None = None
) -> FrameChunk:
    batch = from_ipc(value, (FRAMES_SCHEMA, FRAMES_SCHEMA_NO_CONTENT), "frames")
    stream_id = _single_stream(batch, "frames", key)
    idx = batch.column("frame_idx").to_numpy()
    if idx.size and (idx[0] < 0 or np.any(np.diff(idx) != 1)):
        raise RecordError(
            f"frames of {stream_id!r}: frame_idx must be consecutive from >= 0, got {idx.tolist()}"
        )
    hs, ws = set(batch.column("height").to_pylist()), set(batch.column("width").to_pylist())
    if len(hs) != 1 or len(ws) != 1:
        raise RecordError(f"frames of {stream_id!r}: one chunk must have one frame size")
    (h,), (w,) = hs, ws
    if h <= 0 or w <= 0:
        raise RecordError(f"frames of {stream_id!r}: bad frame size {h}x{w}")
    if expect_size is not None and (h, w) != tuple(expect_size):
        raise RecordError(
            f"frames of {stream_id!r} at {first_idx(idx)}: {h}x{w} frames, the "
            f"model takes {expect_size[0]}x{expect_size[1]}"
        )
    rgb = batch.column("rgb")
    lengths = set(len(v) for v in rgb.to_pylist())
    if lengths != {h * w * 3}:
        raise RecordError(
            f"frames of {stream_id!r} at {first_idx(idx)}: rgb has "
            f"{sorted(lengths)} bytes, {h}x{w}x3 needs {h * w * 3}"
        )
    frames = np.frombuffer(b"".join(rgb.to_pylist()), dtype=np.uint8).reshape(-1, h, w, 3)
    src_h = int(batch.column("source_height")[0].as_py())
    src_w = int(batch.column("source_width")[0].as_py())
    if src_h <= 0 or src_w <= 0:
        raise RecordError(f"frames of {stream_id!r}: bad source size {src_h}x{src_w}")
    content = [0, 0, h, w]  # a chunk without a content box fills the input
    for i, name in enumerate(("content_top", "content_left", "content_height", "content_width")):
        if name not in batch.schema.names:
            continue
        values = set(batch.column(name).to_pylist())
        if len(values) != 1:
            raise RecordError(f"frames of {stream_id!r}: one chunk must have one {name}")
        content[i] = int(values.pop())
    try:
        placement = Placement((src_h, src_w), (h, w), *content)
    except InvalidInputError as exc:
        raise RecordError(f"frames of {stream_id!r} at {first_idx(idx)}: {exc}") from None
    return FrameChunk(
        stream_id=stream_id,
        frame_idx=idx.astype(np.int64),
        pts_ns=batch.column("pts_ns").to_numpy().astype(np.int64),
        capture_ts=batch.column("capture_ts").cast(pa.int64()).to_numpy().astype(np.int64),
        source_height=src_h,
        source_width=src_w,
        frames=frames,
        content=placement.content,
    )


def first_idx(idx: np.ndarray) -> str:
    return f"frame {int(idx[0])}" if idx.size else "?"


def decode_prompt(value: bytes, key: str | None = None) -> PromptRecord:
    batch = from_ipc(value, PROMPT_SCHEMA, "prompt")
    stream_id = _single_stream(batch, "prompt", key)
    at = set(batch.column("frame_idx").to_pylist())
    if len(at) != 1:
        raise RecordError(f"prompt for {stream_id!r}: all objects must share one frame_idx")
    (frame_idx,) = at
    if frame_idx is not None and frame_idx < 0:
        raise RecordError(f"prompt for {stream_id!r}: frame_idx {frame_idx} < 0")
    ids = batch.column("object_id").to_pylist()
    if len(set(ids)) != len(ids) or min(ids) < 0:
        raise RecordError(f"prompt for {stream_id!r}: object ids must be distinct and >= 0")
    hs, ws = batch.column("mask_height").to_pylist(), batch.column("mask_width").to_pylist()
    try:
        masks = np.stack(
            [
                rle.decode(c, h, w)
                for c, h, w in zip(batch.column("mask_rle").to_pylist(), hs, ws, strict=True)
            ]
        )
    except (InvalidInputError, ValueError) as exc:
        raise RecordError(f"prompt for {stream_id!r}: {exc}") from exc
    return PromptRecord(stream_id, frame_idx, [int(i) for i in ids], masks)


def decode_control(
    value: bytes, kind: Literal["end", "reset"], key: str | None = None
) -> ControlRecord:
    batch = from_ipc(value, CONTROL_SCHEMA, kind)
    stream_id = _single_stream(batch, kind, key)
    (frame_idx,) = set(batch.column("frame_idx").to_pylist()) or {0}
    if frame_idx is None or frame_idx < 0:
        raise RecordError(f"{kind} record for {stream_id!r}: frame_idx must be >= 0")
    return ControlRecord(kind, stream_id, int(frame_idx))


def decode(
    kind: str | None,
    value: bytes,
    key: str | None = None,
    expect_size: tuple[int, int] | None = None,
) -> Record:
    """Decode any record by its ``ausm-kind`` header; :class:`RecordError` when invalid."""
    if kind == "frames":
        return decode_frames(value, key, expect_size)
    if kind == "prompt":
        return decode_prompt(value, key)
    if kind in ("end", "reset"):
        return decode_control(value, kind, key)
    raise RecordError(f"unknown record kind {kind!r} (header {KIND_HEADER!r} missing or wrong)")
