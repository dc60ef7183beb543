"""``ausm-stream render``: a stream's tracks drawn over its source video, as an MP4 or as a
PNG contact sheet.

Every track keeps one colour in every frame (:func:`~.overlay.track_colour`, by track id), with
its id and class written at its box. The source video is matched to the stream's frames by
presentation time, as ingest stamped them (time since the source's first frame): a file the
stream was ingested from, or a recording that starts where the stream starts. Frames the
stream skipped (``fps`` resampling, ``skip_to_live``) are not drawn; ``--frames A:B``
restricts the range (needed where a stream was added again and its times restart).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from ausm_stream.deploy.overlay import COLUMNS, paint
from ausm_stream.errors import InvalidInputError, NotFoundError
from ausm_stream.pipeline.query import TrackDataset

PTS_TOLERANCE_NS = 1_000_000
"""A source frame matches a stream frame whose presentation time is within 1 ms."""


@dataclass(frozen=True)
class RenderReport:
    path: Path
    frames: int
    height: int
    width: int


def matched_frames(video: Path, pts_ns: dict[int, int]) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame_idx, rgb)`` of the source frames whose time matches a stream frame's
    (``pts_ns``: stream presentation time -> frame index)."""
    times = np.array(sorted(pts_ns), np.int64)
    with av.open(str(video)) as container:
        first = None
        for frame in container.decode(video=0):
            t = float(frame.time) if frame.time is not None else 0.0
            first = t if first is None else first
            pts = int((t - first) * 1e9)
            i = int(np.searchsorted(times, pts))
            near = [j for j in (i - 1, i) if 0 <= j < len(times)]
            hit = min(near, key=lambda j: abs(times[j] - pts)) if near else None
            if hit is not None and abs(times[hit] - pts) <= PTS_TOLERANCE_NS:
                yield pts_ns[int(times[hit])], frame.to_ndarray(format="rgb24")


def render(
    data: TrackDataset,
    stream_id: str,
    video: Path,
    out: Path,
    frames: tuple[int, int] | None = None,
    sheet_frames: int = 8,
    columns: int = 4,
    fps: float | None = None,
) -> RenderReport:
    """Draw ``stream_id``'s tracks over ``video`` into ``out``: an MP4 (H.264) of every
    matched frame, or, for a ``.png``, a contact sheet of ``sheet_frames`` evenly spaced
    ones. ``frames`` is an inclusive ``(first, last)`` frame range."""
    if out.suffix.lower() not in (".mp4", ".png"):
        raise InvalidInputError(f"render output {str(out)!r}: name an .mp4 or a .png file")
    cond, params = "stream_id = ?", [stream_id]
    if frames is not None:
        cond += " AND frame_idx BETWEEN ? AND ?"
        params += list(frames)
    stamps = data.query(f"SELECT frame_idx, pts_ns FROM frames WHERE {cond}", params)
    if stamps.num_rows == 0:
        raise NotFoundError(f"stream {stream_id!r} has no frames in the dataset to render")
    pts_ns = dict(zip(stamps["pts_ns"].to_pylist(), stamps["frame_idx"].to_pylist(), strict=True))
    if len(pts_ns) < stamps.num_rows:
        raise InvalidInputError(
            f"stream {stream_id!r} has frames with the same presentation time (it was added "
            "again, and its times restarted): choose one life with --frames FIRST:LAST"
        )
    rows = data.query(f"SELECT {', '.join(COLUMNS)} FROM tracks WHERE {cond}", params)
    by_frame: dict[int, list[dict]] = {}
    for r in rows.to_pylist():
        by_frame.setdefault(r["frame_idx"], []).append(r)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":  # only the frames the sheet shows are kept
        every = sorted(pts_ns.items(), key=lambda kv: kv[1])
        picks = np.linspace(0, len(every) - 1, sheet_frames).round().astype(int)
        shown = dict(every[i] for i in sorted(set(picks.tolist())))
        return _sheet(list(matched_frames(video, shown)), by_frame, out, columns)
    return _video(matched_frames(video, pts_ns), by_frame, out, len(pts_ns), fps or _rate(video))


def _rate(video: Path) -> float:
    with av.open(str(video)) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else 8.0


def _video(
    matched: Iterator[tuple[int, np.ndarray]],
    by_frame: dict[int, list[dict]],
    out: Path,
    total: int,
    fps: float,
) -> RenderReport:
    count, size = 0, (0, 0)
    with av.open(str(out), "w") as container:
        stream = None
        for idx, rgb in tqdm(matched, total=total, desc=f"rendering {out.name}", unit="frame"):
            tile = np.asarray(paint(rgb, by_frame.get(idx, [])))
            h, w = tile.shape[0] // 2 * 2, tile.shape[1] // 2 * 2  # yuv420p: even sizes
            if stream is None:
                stream = container.add_stream("libx264", rate=round(fps))
                stream.height, stream.width, stream.pix_fmt = h, w, "yuv420p"
                stream.options = {"crf": "18"}
                size = (h, w)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tile[:h, :w]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        if stream is None:
            raise NotFoundError(f"no frame of {out.stem!r} matched the source video's times")
        for packet in stream.encode():
            container.mux(packet)
    return RenderReport(out, count, *size)


def _sheet(
    matched: list[tuple[int, np.ndarray]],
    by_frame: dict[int, list[dict]],
    out: Path,
    columns: int,
) -> RenderReport:
    if not matched:
        raise NotFoundError(f"no frame of {out.stem!r} matched the source video's times")
    tiles = []
    for idx, rgb in matched:
        tile = paint(rgb, by_frame.get(idx, []))
        ImageDraw.Draw(tile).text((3, 3), f"frame {idx}", fill=(255, 255, 255))
        tiles.append(tile)
    th, tw = tiles[0].height, tiles[0].width
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (min(columns, len(tiles)) * tw, rows * th), (0, 0, 0))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * tw, (i // columns) * th))
    sheet.save(out)
    return RenderReport(out, len(tiles), sheet.height, sheet.width)
