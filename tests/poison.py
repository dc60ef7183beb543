"""Records and ids a producer may send that a worker must not trust, for the tests and
``bench/faults.py``: each passes Kafka's checks and is small on the wire, but declares sizes
that would allocate gigabytes, or names paths outside the store."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pycocotools import mask as mask_utils

from ausm_stream.pipeline import records

HOSTILE_IDS = [
    "../../x",
    "../registry/streams/evil",
    "a/b",
    "x%2Fy",
    "ok\n",
    "",
    "x" * 129,
]
"""Ids a producer, a caller or a dataset may bring that must never name a path: climbing out
of the store, into the registry, into another stream's folder, out of an export's folder once
URL-decoded, a trailing newline (which ``$`` lets through), empty and too long."""


def inflating_chunk(first: int, stream: str = "cam") -> bytes:
    """One 128x128 frame whose rgb value is 512 MiB of zeros (18 KiB once compressed)."""
    one = records.FrameChunk(
        stream,
        np.array([first]),
        np.array([0]),
        np.array([10**18]),
        128,
        128,
        np.zeros((1, 128, 128, 3), np.uint8),
    )
    value, _ = records.encode(one)
    batch = pa.ipc.open_stream(pa.py_buffer(value)).read_next_batch()
    zeros = np.zeros(512 << 20, np.uint8)  # calloc'd: its pages are never touched
    offsets = pa.py_buffer(np.array([0, zeros.size], np.int32))
    rgb = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(zeros)])
    return records.to_ipc(batch.set_column(batch.schema.get_field_index("rgb"), "rgb", rgb))


def wide_record() -> bytes:
    """A record of 2,000 columns: its schema, quoted in the reason, is ~60 KB of text."""
    columns = [pa.array([1], pa.int8()) for _ in range(2000)]
    return records.to_ipc(pa.record_batch(columns, names=[f"column_{i}" for i in range(2000)]))


def rle_counts(h: int, w: int) -> bytes:
    """The COCO RLE of an h x w mask with one run set, without allocating the mask."""
    runs = [h * w // 2, 10, h * w - h * w // 2 - 10]
    return mask_utils.frPyObjects({"size": [h, w], "counts": runs}, h, w)["counts"]


def prompt_value(k: int, h: int, w: int, stream: str = "cam-1") -> bytes:
    """A prompt record of ``k`` objects with h x w masks (1.2 KB for 4 of 16000 x 16000,
    which decoded take 1.95 GiB)."""
    return records.to_ipc(
        pa.record_batch(
            [
                pa.array([stream] * k),
                pa.array([None] * k, pa.int64()),
                pa.array(range(k), pa.int64()),
                pa.array([rle_counts(h, w)] * k, pa.binary()),
                pa.array([h] * k, pa.int32()),
                pa.array([w] * k, pa.int32()),
            ],
            schema=records.PROMPT_SCHEMA,
        )
    )
