"""The mask tracks in the formats other tools read.

- **YouTube-VIS results** (``results.json``): one entry per track, ``video_id``,
  ``category_id`` (its class as in ``track_summary``), ``score`` (the track's mean),
  ``segmentations`` (one COCO RLE per frame of
  the video at the source size, ``null`` where the track is not seen), plus ``track_id``
  and ``stream_id``, which evaluators ignore. ``videos.json`` beside it names the videos
  (one per stream: id, stream, first frame, length, height, width) and the categories (one
  per class id; labels that share an id are named together, ``circle/square``).
- **MOTS** text (MOTSChallenge, one file per stream): ``frame id class_id height width rle``
  per line, frames numbered from 1 (``frame_idx + 1``), masks at the source size. MOTS
  forbids overlapping masks, so a pixel two tracks claim goes to the higher-scoring one (a
  mask left empty by that is not written).
- **MOT challenge** boxes (one file per stream): ``frame,id,x,y,w,h,score,-1,-1,-1``,
  frames from 1, boxes in source pixels; ground truth (``ground_truth=True``) writes
  ``frame,id,x,y,w,h,1,class_id,1`` as MOT's ``gt.txt`` does.

Class ids: by default the labels in the rows sorted by name and numbered from 1;
``--class-id LABEL=ID`` (:func:`class_ids`) sets one, ``*=ID`` all others (TrackEval's
MOTS and MOT benchmarks score class 2 and class 1, "pedestrian").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from ausm_stream import rle
from ausm_stream.errors import InvalidInputError
from ausm_stream.pipeline.ids import check_stream_id
from ausm_stream.pipeline.tracks import scale_mask

Format = Literal["ytvis", "mots", "mot"]
FORMATS: tuple[Format, ...] = ("ytvis", "mots", "mot")


def class_ids(labels: Iterable[str], pairs: Sequence[str] = ()) -> dict[str, int]:
    """Label -> class id: ``labels`` sorted and numbered from 1, then ``LABEL=ID`` pairs
    (``*=ID``: every label not named)."""
    ids = {label: i for i, label in enumerate(sorted(set(labels)), start=1)}
    named: dict[str, int] = {}
    for pair in pairs:
        label, sep, value = pair.partition("=")
        if not sep or not value.lstrip("-").isdigit():
            raise InvalidInputError(f"class id {pair!r}: write LABEL=ID (an integer), or *=ID")
        named[label] = int(value)
    if "*" in named:
        ids = dict.fromkeys(ids, named.pop("*"))
    return {**ids, **named}


def categories(ids: dict[str, int]) -> list[dict]:
    """YouTube-VIS categories, one per class id (ids are unique there): labels that share an
    id (``*=ID``) are named together, ``circle/square``."""
    names: dict[int, list[str]] = {}
    for label, i in ids.items():
        names.setdefault(i, []).append(label)
    return [{"id": i, "name": "/".join(sorted(n))} for i, n in sorted(names.items())]


def exclusive(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Masks (k, H, W) with every pixel kept by the highest-scoring mask that claims it
    (ties: the first)."""
    if len(masks) < 2:
        return masks
    rank = np.argsort(-scores, kind="stable")
    taken = np.zeros(masks.shape[1:], bool)
    out = np.zeros_like(masks)
    for i in rank:
        out[i] = masks[i] & ~taken
        taken |= masks[i]
    return out


def _frames(rows: pa.Table) -> Iterator[list[dict]]:
    """One stream's rows grouped by frame, in frame order."""
    group: list[dict] = []
    for row in sorted(rows.to_pylist(), key=lambda r: (r["frame_idx"], r["track_id"])):
        if group and row["frame_idx"] != group[0]["frame_idx"]:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def _source_mask(row: dict) -> np.ndarray:
    mask = rle.decode(row["mask_rle"], row["mask_height"], row["mask_width"])
    return scale_mask(mask, row["source_height"], row["source_width"])


def mots_lines(rows: pa.Table, ids: dict[str, int]) -> Iterator[str]:
    """One stream's rows as MOTS lines."""
    for frame in _frames(rows):
        masks = exclusive(
            np.stack([_source_mask(r) for r in frame]),
            np.array([r["score"] for r in frame], np.float32),
        )
        counts = rle.encode(masks)
        for r, mask, c in zip(frame, masks, counts, strict=True):
            if not mask.any():  # wholly under a higher-scoring mask: nothing of it is seen
                continue
            h, w = r["source_height"], r["source_width"]
            yield f"{r['frame_idx'] + 1} {r['track_id']} {ids[r['label']]} {h} {w} {c.decode()}"


def mot_lines(rows: pa.Table, ids: dict[str, int], ground_truth: bool = False) -> Iterator[str]:
    """One stream's rows as MOT challenge lines (``ground_truth``: as ``gt.txt``, classes
    from ``ids``)."""
    for frame in _frames(rows):
        for r in frame:
            b = r["bbox"]
            box = f"{b['x0']:.2f},{b['y0']:.2f},{b['x1'] - b['x0']:.2f},{b['y1'] - b['y0']:.2f}"
            tail = f"1,{ids[r['label']]},1" if ground_truth else f"{r['score']:.4f},-1,-1,-1"
            yield f"{r['frame_idx'] + 1},{r['track_id']},{box},{tail}"


@dataclass(frozen=True)
class VideoInfo:
    """A stream as a YouTube-VIS video: its frames ``first`` to ``first + length - 1``."""

    id: int
    stream_id: str
    first: int
    length: int
    height: int
    width: int


def youtube_vis(rows: pa.Table, video: VideoInfo, ids: dict[str, int]) -> list[dict]:
    """One stream's rows as YouTube-VIS results, one entry per track."""
    by_track: dict[int, list[dict]] = {}
    for r in rows.to_pylist():
        by_track.setdefault(r["track_id"], []).append(r)
    results = []
    for track_id, track in sorted(by_track.items()):
        segs: list[dict | None] = [None] * video.length
        for r in track:
            counts = rle.encode(_source_mask(r)[None])[0]
            segs[r["frame_idx"] - video.first] = {
                "size": [video.height, video.width],
                "counts": counts.decode(),
            }
        label = max(track, key=lambda r: r["frame_idx"])["label"]  # as track_summary has it
        results.append(
            {
                "video_id": video.id,
                "category_id": ids[label],
                "score": float(np.mean([r["score"] for r in track])),
                "segmentations": segs,
                "track_id": track_id,
                "stream_id": video.stream_id,
            }
        )
    return results


def read_youtube_vis(results: Path) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """A results file written by :func:`write_export` read back: ``(stream, track) ->
    (frame_idx, masks (n, H, W))`` for the frames each track is seen in."""
    meta = json.loads((results.parent / "videos.json").read_text())
    videos = {v["id"]: v for v in meta["videos"]}
    out = {}
    for entry in json.loads(results.read_text()):
        video = videos[entry["video_id"]]
        seen = [(i, s) for i, s in enumerate(entry["segmentations"]) if s is not None]
        masks = (
            np.stack([rle.decode(s["counts"].encode(), *s["size"]) for _, s in seen])
            if seen
            else np.zeros((0, video["height"], video["width"]), bool)
        )
        frames = np.array([video["first"] + i for i, _ in seen], np.int64)
        out[(video["stream_id"], entry["track_id"])] = (frames, masks)
    return out


@dataclass
class ExportReport:
    rows: int = 0
    """Track rows written (YouTube-VIS: every row, within its track's entry)."""
    hidden: int = 0
    """MOTS only: rows left out because their mask lies wholly under higher-scoring ones
    (MOTS forbids overlapping masks, so none of it would be seen)."""
    files: list[Path] = field(default_factory=list)


def write_export(
    streams: Iterable[tuple[VideoInfo, pa.Table]],
    fmt: Format,
    out: Path,
    ids: dict[str, int],
    ground_truth: bool = False,
) -> ExportReport:
    """Write each stream's rows in ``fmt`` under the folder ``out``: ``<stream>.txt`` per
    stream (MOTS, MOT), or ``results.json`` and ``videos.json`` (YouTube-VIS).
    ``ground_truth`` writes MOT files as ``gt.txt`` is written (the rows are the truth).
    A stream id names a file, so one that is not a stream id (:mod:`.ids`) is refused."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"export format must be one of {list(FORMATS)}, got {fmt!r}")
    out.mkdir(parents=True, exist_ok=True)
    report = ExportReport()
    results: list[dict] = []
    videos: list[VideoInfo] = []
    for video, rows in streams:
        check_stream_id(video.stream_id)  # it names a file: never one outside ``out``
        if fmt == "ytvis":
            results.extend(youtube_vis(rows, video, ids))
            videos.append(video)
            report.rows += rows.num_rows
            continue
        lines = list(mots_lines(rows, ids) if fmt == "mots" else mot_lines(rows, ids, ground_truth))
        report.rows += len(lines)
        report.hidden += rows.num_rows - len(lines)
        path = out / f"{video.stream_id}.txt"
        path.write_text("".join(line + "\n" for line in lines))
        report.files.append(path)
    if fmt == "ytvis":
        (out / "results.json").write_text(json.dumps(results))
        meta = {
            "videos": [v.__dict__ for v in videos],
            "categories": categories(ids),
        }
        (out / "videos.json").write_text(json.dumps(meta, indent=1))
        report.files += [out / "results.json", out / "videos.json"]
    return report
