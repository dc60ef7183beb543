"""Track datasets written by the real Parquet sink from made-up tracks: for the analytics
tests and ``bench/query.py``.

Each stream has ``days`` separate days of frames (one every ``interval_s`` from 02:00 UTC),
so every day is a ``date`` partition of its own. Tracks come and go: a track lives for
``life`` frames and ``tracks`` of them overlap at any time; its class is fixed except for a
few frames given another one (so the summary's class, the last frame's, is tested). Masks are small
discs on a ``MASK`` grid of a ``SOURCE`` frame (not square, so scaling is tested per axis).
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from ausm_stream.pipeline.sinks import ParquetSink, TrackSinks
from ausm_stream.pipeline.storage import ObjectStore
from ausm_stream.pipeline.tracks import FrameTracks

SOURCE = (96, 128)
MASK = (48, 64)
LABELS = ("circle", "square", "triangle", "ring")
START = datetime(2026, 12, 3, 2, 0, tzinfo=timezone.utc)
DAY_NS = 86_400 * 10**9


def frame_tracks(
    stream_id: str, frame_idx: int, capture_ts: int, tracks: int, life: int
) -> FrameTracks:
    """Frame ``frame_idx``'s tracks: ids ``frame_idx // life * tracks + 1 ..``, offset so
    that tracks overlap in time."""
    ids, labels, masks = [], [], []
    ys, xs = np.mgrid[: MASK[0], : MASK[1]]
    for k in range(tracks):
        start = (frame_idx + k * life // tracks) // life  # staggered lives
        track_id = start * tracks + k + 1
        age = (frame_idx + k * life // tracks) % life
        cls = LABELS[track_id % len(LABELS)]
        if age % 7 == 3:  # now and then the model hesitates
            cls = LABELS[(track_id + 1) % len(LABELS)]
        cx = 4 + (track_id * 7 + age) % (MASK[1] - 8)
        cy = 4 + (track_id * 5) % (MASK[0] - 8)
        masks.append((xs - cx) ** 2 + (ys - cy) ** 2 <= (2 + track_id % 3) ** 2)
        ids.append(track_id)
        labels.append(cls)
    m = np.array(masks, bool).reshape(tracks, *MASK)
    rng = np.random.default_rng([frame_idx, *stream_id.encode()])
    return FrameTracks(
        stream_id,
        frame_idx,
        frame_idx * 10**8,
        capture_ts,
        *SOURCE,
        np.array(ids, np.int64),
        labels,
        rng.uniform(0.5, 1.0, tracks).astype(np.float32),
        m,
        np.where(np.array(ids) == 1, 0, -1),  # track 1 was prompted (object 0)
    )


def write_tracks(
    store: ObjectStore,
    streams: list[str],
    days: int = 2,
    frames_per_day: int = 48,
    tracks: int = 3,
    life: int = 20,
    interval_s: float = 10.0,
    window: int = 16,
) -> int:
    """Write the dataset through the sink; returns the number of track rows."""
    sinks = TrackSinks("m@1", parquet=ParquetSink(store, "m@1", window))
    start_ns = int(START.timestamp()) * 10**9
    rows = 0
    for sid in streams:
        for day in range(days):
            for i in range(frames_per_day):
                idx = day * frames_per_day + i
                ts = start_ns + day * DAY_NS + int(i * interval_s * 1e9)
                frame = frame_tracks(sid, idx, ts, tracks, life)
                sinks.add(frame)
                rows += len(frame.track_ids)
        sinks.end(sid)
    return rows
