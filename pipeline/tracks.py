"""The output records: what the worker writes for every frame it processes.

From a model result to a row, in one direction:

1. The processor turns a step's result into a :class:`FrameTracks` (the model's masks cut to
   the frame's content box, class names, prompt object ids).
2. The sinks (:mod:`.sinks`) encode it with :func:`encode_tracks` into rows of
   :data:`TRACKS_SCHEMA` (boxes and areas in source pixels, masks as COCO RLE) and a
   :class:`FrameInfo` for the frames table (:data:`FRAMES_TABLE_SCHEMA`), then write both to
   the tracks topic and the Parquet dataset.
3. Readers decode masks back to the source frame with :func:`source_masks`.

The track row (SYSTEM.md, "Records"): one per (frame, track), masks at the content box's
resolution of the model's mask grid (``mask_height`` x ``mask_width``), scaled to the source
(``source_height`` x ``source_width``) by readers, each axis by its own factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ausm_stream import rle
from ausm_stream.errors import RecordError
from ausm_stream.pipeline.records import (
    FRAME_KEY,
    MAX_INPUT_SIDE,
    open_record,
    rle_bytes_at_most,
)

BBOX_TYPE = pa.struct(
    [("x0", pa.float32()), ("y0", pa.float32()), ("x1", pa.float32()), ("y1", pa.float32())]
)

TRACKS_SCHEMA = pa.schema(
    [
        *FRAME_KEY,
        ("track_id", pa.int64()),
        ("label", pa.utf8()),
        ("score", pa.float32()),
        ("bbox", BBOX_TYPE),
        ("area", pa.int64()),
        ("mask_rle", pa.binary()),
        ("mask_height", pa.int32()),
        ("mask_width", pa.int32()),
        ("source_height", pa.int32()),
        ("source_width", pa.int32()),
        ("prompted", pa.bool_()),
        ("prompt_object_id", pa.int64()),
        ("model_version", pa.utf8()),
    ]
)
"""One row per (frame, track); ``prompt_object_id`` is null for unprompted tracks."""

FRAMES_TABLE_SCHEMA = pa.schema(
    [
        *FRAME_KEY,
        ("tracks", pa.int32()),
        ("skipped", pa.bool_()),
        ("model_version", pa.utf8()),
    ]
)
"""One row per frame the worker received: its identity and timing as in the chunk, its
track count, and whether it was skipped to catch up (``worker.lag_policy``) instead of
segmented."""

FRAME_INFO_SCHEMA = pa.schema([*FRAME_KEY, ("tracks", pa.int32()), ("skipped", pa.bool_())])
""":class:`FrameInfo` as a table (what a checkpoint carries of a sink's buffer)."""


@dataclass(frozen=True)
class FrameInfo:
    """What the frames table keeps of a frame besides its track rows."""

    stream_id: str
    frame_idx: int
    pts_ns: int
    capture_ts: int
    tracks: int
    skipped: bool = False

    @classmethod
    def of(cls, frame: FrameTracks) -> FrameInfo:
        return cls(
            frame.stream_id,
            frame.frame_idx,
            frame.pts_ns,
            frame.capture_ts,
            len(frame.track_ids),
            frame.skipped,
        )


def frames_table(infos: list[FrameInfo], model_version: str | None = None) -> pa.Table:
    """Rows of the frames table (:data:`FRAMES_TABLE_SCHEMA`), or, without a model version,
    of :data:`FRAME_INFO_SCHEMA`."""
    columns = {
        "stream_id": pa.array([i.stream_id for i in infos], pa.utf8()),
        "frame_idx": pa.array([i.frame_idx for i in infos], pa.int64()),
        "pts_ns": pa.array([i.pts_ns for i in infos], pa.int64()),
        "capture_ts": pa.array([i.capture_ts for i in infos], pa.timestamp("ns", tz="UTC")),
        "tracks": pa.array([i.tracks for i in infos], pa.int32()),
        "skipped": pa.array([i.skipped for i in infos], pa.bool_()),
    }
    if model_version is None:
        return pa.table(columns, schema=FRAME_INFO_SCHEMA)
    columns["model_version"] = pa.array([model_version] * len(infos), pa.utf8())
    return pa.table(columns, schema=FRAMES_TABLE_SCHEMA)


@dataclass
class FrameTracks:
    """The tracks of one frame, in the terms of the track record (model-agnostic)."""

    stream_id: str
    frame_idx: int
    pts_ns: int
    capture_ts: int
    source_height: int
    source_width: int
    track_ids: np.ndarray  # (K,) int64
    labels: list[str]
    scores: np.ndarray  # (K,) float32
    masks: np.ndarray
    """(K, h, w) bool: the model's masks cut to the frame's content box (the letterbox bands
    dropped, :meth:`~.geometry.Placement.crop`), so ``(h, w)`` maps onto the source frame."""
    prompt_object_ids: np.ndarray  # (K,) int64, -1 = not prompted
    skipped: bool = False
    """The frame was skipped to catch up (``worker.lag_policy: skip_to_live``): no tracks."""
    image: np.ndarray | None = None
    """The frame's content at the model's resolution (the bands cut off), (H', W', 3) uint8,
    for previews; not written to any sink."""

    @classmethod
    def skipped_frame(
        cls,
        stream_id: str,
        frame_idx: int,
        pts_ns: int,
        capture_ts: int,
        source_height: int,
        source_width: int,
        mask_size: tuple[int, int],
    ) -> FrameTracks:
        """A frame that was not segmented, for the frames table to record as skipped."""
        return cls(
            stream_id,
            frame_idx,
            pts_ns,
            capture_ts,
            source_height,
            source_width,
            track_ids=np.zeros(0, np.int64),
            labels=[],
            scores=np.zeros(0, np.float32),
            masks=np.zeros((0, *mask_size), bool),
            prompt_object_ids=np.zeros(0, np.int64),
            skipped=True,
        )


def encode_tracks(frames: list[FrameTracks], model_version: str) -> pa.RecordBatch:
    """One row per (frame, track); boxes and areas in source pixels, those of the mask that
    :func:`source_masks` decodes (exact at any scale, whole or not)."""
    cols: dict[str, list] = {name: [] for name in TRACKS_SCHEMA.names}
    for f in frames:
        k = len(f.track_ids)
        if k == 0:
            continue
        mh, mw = f.masks.shape[1:]
        counts = rle.encode(f.masks)
        areas, scaled = source_extent(f.masks, f.source_height, f.source_width)
        for i in range(k):
            box = dict(zip(("x0", "y0", "x1", "y1"), scaled[i].tolist(), strict=True))
            obj = int(f.prompt_object_ids[i])
            row = {
                "stream_id": f.stream_id,
                "frame_idx": f.frame_idx,
                "pts_ns": f.pts_ns,
                "capture_ts": f.capture_ts,
                "track_id": int(f.track_ids[i]),
                "label": f.labels[i],
                "score": float(f.scores[i]),
                "bbox": box,
                "area": int(areas[i]),
                "mask_rle": counts[i],
                "mask_height": mh,
                "mask_width": mw,
                "source_height": f.source_height,
                "source_width": f.source_width,
                "prompted": obj >= 0,
                "prompt_object_id": obj if obj >= 0 else None,
                "model_version": model_version,
            }
            for name, value in row.items():
                cols[name].append(value)
    arrays = [pa.array(cols[f.name], type=f.type) for f in TRACKS_SCHEMA]
    return pa.record_batch(arrays, schema=TRACKS_SCHEMA)


MAX_TRACK_ROWS = 1 << 16
"""Rows one tracks message holds at most (a window of ``ingest.chunk_frames`` frames, each
with its tracks)."""

MAX_TEXT_BYTES = 1024
"""Bytes of a track row's ``label`` and ``model_version`` at most."""


def decode_tracks(value: bytes) -> pa.RecordBatch:
    """A tracks-topic message's rows, checked (:class:`RecordError` when invalid). As for the
    input records, every size it declares is bounded before it is decompressed; its masks'
    RLE by the mask sizes its rows give."""
    text = {"label": MAX_TEXT_BYTES, "model_version": MAX_TEXT_BYTES}
    record = open_record(
        value, (TRACKS_SCHEMA,), "tracks", MAX_TRACK_ROWS, text, nullable={"prompt_object_id"}
    )
    sizes = record.read(["mask_height", "mask_width"])
    masks = list(zip(*(sizes.column(n).to_pylist() for n in sizes.schema.names), strict=True))
    if not all(0 < h <= MAX_INPUT_SIDE and 0 < w <= MAX_INPUT_SIDE for h, w in masks):
        raise RecordError(f"tracks message: mask sizes must lie within 1-{MAX_INPUT_SIDE}")
    most = sum(rle_bytes_at_most(h, w) for h, w in masks)
    record.bound("mask_rle", most, "tracks message", f"its masks' sizes allow {most}")
    return record.read()


# -- tracks messages -------------------------------------------------------------------------
TRACK_HEADERS = ("ausm-stream", "ausm-first-frame", "ausm-last-frame", "ausm-model-version")
"""Headers of every tracks message: which stream, frames and model it is about."""


def track_headers(
    stream_id: str, first: int, last: int, model_version: str
) -> list[tuple[str, bytes]]:
    values = (stream_id, str(first), str(last), model_version)
    return [(k, v.encode()) for k, v in zip(TRACK_HEADERS, values, strict=True)]


def track_message_id(headers: list[tuple[str, bytes]] | None) -> tuple[str, ...]:
    """(stream, first frame, last frame, model version) of a tracks message: the key by
    which a consumer drops the repeats a replay sends (the tracks topic is at-least-once)."""
    found = dict(headers or ())
    missing = [k for k in TRACK_HEADERS if k not in found]
    if missing:
        raise RecordError(f"tracks message lacks the header(s) {missing}")
    return tuple(found[k].decode() for k in TRACK_HEADERS)


# -- reading masks back ------------------------------------------------------------------------
MASK_COLUMNS = [
    "frame_idx",
    "mask_rle",
    "mask_height",
    "mask_width",
    "source_height",
    "source_width",
]
"""The columns :func:`source_masks` reads."""


def _cells(pixels: int, cells: int) -> np.ndarray:
    """The mask cell under each of ``pixels`` source pixels along one axis: the cell under the
    pixel's centre, ``floor((i + 0.5) * cells / pixels)``."""
    return np.minimum(((np.arange(pixels) + 0.5) * cells / pixels).astype(np.int64), cells - 1)


def scale_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (h, w) mask at (height, width), nearest cell: pixel (y, x) takes the cell under its
    centre (:func:`_cells`). Every output pixel is covered by exactly one mask cell, so masks
    of different tracks never gain overlap."""
    h, w = mask.shape
    return mask[_cells(height, h)[:, None], _cells(width, w)[None, :]]


def source_extent(masks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Areas (k,) int64 and boxes (k, 4) float32 (x0, y0, x1, y1 pixel edges) of masks
    (k, h, w) once scaled to (height, width) by :func:`scale_mask`, without scaling them: a
    cell counts as many source pixels as map to it, on each axis. An empty mask gets area 0
    and a zero box."""
    h, w = masks.shape[1:]
    ys, xs = _cells(height, h), _cells(width, w)
    per_row, per_col = np.bincount(ys, minlength=h), np.bincount(xs, minlength=w)
    areas = np.einsum("khw,h,w->k", masks.astype(np.int64), per_row, per_col)
    rows, cols = masks.any(2)[:, ys], masks.any(1)[:, xs]  # (k, height), (k, width)

    def first_last(hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = hits.shape[1]
        return hits.argmax(1), n - hits[:, ::-1].argmax(1)

    (y0, y1), (x0, x1) = first_last(rows), first_last(cols)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)
    boxes[areas == 0] = 0
    return areas, boxes


def source_masks(rows: pa.Table | pa.RecordBatch | list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Track rows' masks decoded and scaled to their source frame size: ``(frame_idx (n,),
    masks (n, H, W) bool)``, in the rows' order.

    ``rows`` are track rows (a query's result, a dataset slice or ``to_pylist()`` dicts) with
    at least :data:`MASK_COLUMNS`; all must share one source size (one stream)."""
    if not isinstance(rows, list):
        rows = rows.select(MASK_COLUMNS).to_pylist()
    sizes = {(r["source_height"], r["source_width"]) for r in rows}
    if len(sizes) > 1:
        raise RecordError(
            f"rows come from sources of different sizes {sorted(sizes)}: select one stream"
        )
    (sh, sw) = sizes.pop() if sizes else (0, 0)
    masks = np.zeros((len(rows), sh, sw), bool)
    for i, r in enumerate(rows):
        mask = rle.decode(r["mask_rle"], r["mask_height"], r["mask_width"])
        masks[i] = scale_mask(mask, sh, sw)
    return np.array([r["frame_idx"] for r in rows], np.int64), masks
