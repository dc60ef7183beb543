"""Readers and writers for the annotation formats users bring.

- **DAVIS** (2017 semi-supervised layout): ``JPEGImages/480p/<video>/<frame>.jpg`` and
  ``Annotations/480p/<video>/<frame>.png``, palette PNGs whose pixel value is the object id
  (0 = background); ``ImageSets/2017/<split>.txt`` lists videos. DAVIS has no classes: objects
  are read as class 0.
- **YouTube-VIS**: a JSON with ``videos`` (``file_names`` relative to an image root),
  ``annotations`` (per instance: ``video_id``, ``category_id``, ``segmentations`` with one
  COCO RLE or null per frame) and ``categories``.

The synthetic generator writes both, and the tests read them back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from ausm_stream import rle
from ausm_stream.errors import InvalidInputError
from ausm_stream.model.data.video import Video

DAVIS_RES = "480p"


def _palette() -> list[int]:
    """DAVIS's colour convention: object i gets the i-th colour of the bit-interleaved map."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def write_davis(videos: list[Video], root: Path, split: str = "val") -> None:
    for v in videos:
        if v.num_instances > 255:
            raise InvalidInputError(f"DAVIS PNGs hold at most 255 objects, {v.name} has more")
        img_dir = root / "JPEGImages" / DAVIS_RES / v.name
        ann_dir = root / "Annotations" / DAVIS_RES / v.name
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for t in range(v.num_frames):
            Image.fromarray(v.frames[t]).save(img_dir / f"{t:05d}.jpg", quality=95, subsampling=0)
            index = np.zeros(v.size, dtype=np.uint8)
            for k in range(v.num_instances):
                index[v.masks[t, k]] = k + 1
            png = Image.fromarray(index)  # L; putpalette makes it P with the same indices
            png.putpalette(_palette())
            png.save(ann_dir / f"{t:05d}.png")
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / f"{split}.txt").write_text("".join(f"{v.name}\n" for v in videos))


def read_davis(root: Path, split: str | None = None) -> list[Video]:
    img_root = root / "JPEGImages" / DAVIS_RES
    if not img_root.is_dir():
        raise InvalidInputError(f"{root} is not a DAVIS folder: {img_root} is missing")
    if split:
        listing = root / "ImageSets" / "2017" / f"{split}.txt"
        if not listing.is_file():
            raise InvalidInputError(f"DAVIS split file {listing} is missing")
        names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
    else:
        names = sorted(p.name for p in img_root.iterdir() if p.is_dir())
    videos = []
    for name in names:
        frames_p = sorted((img_root / name).glob("*.jpg"))
        anns_p = [root / "Annotations" / DAVIS_RES / name / (p.stem + ".png") for p in frames_p]
        if not frames_p:
            raise InvalidInputError(f"DAVIS video {name} has no frames")
        frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in frames_p])
        index = np.stack(
            [
                np.asarray(Image.open(p)) if p.is_file() else np.zeros(frames.shape[1:3], np.uint8)
                for p in anns_p
            ]
        )
        ids = sorted(int(i) for i in np.unique(index) if i != 0)
        masks = (
            np.stack([index == i for i in ids], axis=1)
            if ids
            else np.zeros((len(frames), 0, *frames.shape[1:3]), dtype=bool)
        )
        videos.append(Video(name, frames, masks, np.zeros(len(ids), dtype=np.int64), ("object",)))
    return videos


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of a bool (H, W) mask, JSON-ready (counts as str)."""
    (counts,) = rle.encode(mask[None])
    return {"size": [int(s) for s in mask.shape], "counts": counts.decode("ascii")}


def decode_rle(obj: dict) -> np.ndarray:
    counts = obj["counts"]
    if isinstance(counts, list):  # uncompressed RLE, as some YouTube-VIS files have
        counts = mask_utils.frPyObjects(obj, *obj["size"])["counts"]
    return rle.decode(counts, *obj["size"])


def write_ytvis(videos: list[Video], annotations: Path, image_root: Path) -> None:
    class_names = videos[0].class_names if videos else ()
    out = {
        "videos": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)],
    }
    ann_id = 1
    for vid, v in enumerate(videos, start=1):
        folder = image_root / v.name
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for t in range(v.num_frames):
            Image.fromarray(v.frames[t]).save(folder / f"{t:05d}.jpg", quality=95, subsampling=0)
            names.append(f"{v.name}/{t:05d}.jpg")
        h, w = v.size
        out["videos"].append(
            {"id": vid, "file_names": names, "height": h, "width": w, "length": v.num_frames}
        )
        for k in range(v.num_instances):
            segs = [
                encode_rle(v.masks[t, k]) if v.masks[t, k].any() else None
                for t in range(v.num_frames)
            ]
            out["annotations"].append(
                {
                    "id": ann_id,
                    "video_id": vid,
                    "category_id": int(v.classes[k]) + 1,
                    "iscrowd": 0,
                    "segmentations": segs,
                }
            )
            ann_id += 1
    annotations.parent.mkdir(parents=True, exist_ok=True)
    annotations.write_text(json.dumps(out))


def read_ytvis(annotations: Path, image_root: Path) -> list[Video]:
    if not annotations.is_file():
        raise InvalidInputError(f"YouTube-VIS annotations {annotations} do not exist")
    data = json.loads(annotations.read_text())
    for key in ("videos", "annotations", "categories"):
        if key not in data:
            raise InvalidInputError(f"{annotations} is not YouTube-VIS JSON: no {key!r}")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    names = tuple(c["name"] for c in cats)
    by_video: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_video.setdefault(ann["video_id"], []).append(ann)
    videos = []
    for v in data["videos"]:
        frames = np.stack(
            [np.asarray(Image.open(image_root / f).convert("RGB")) for f in v["file_names"]]
        )
        anns = by_video.get(v["id"], [])
        masks = np.zeros((len(frames), len(anns), v["height"], v["width"]), dtype=bool)
        for k, ann in enumerate(anns):
            for t, seg in enumerate(ann["segmentations"]):
                if seg is not None:
                    masks[t, k] = decode_rle(seg)
        classes = np.array([cat_index[a["category_id"]] for a in anns], dtype=np.int64)
        name = Path(v["file_names"][0]).parent.name if v["file_names"] else str(v["id"])
        videos.append(Video(name, frames, masks, classes, names))
    return videos


def resize_video(video: Video, size: tuple[int, int]) -> Video:
    """Frames bilinear and masks nearest to ``size`` (H, W); a no-op at the right size."""
    if video.size == size:
        return video
    h, w = size
    frames = np.stack(
        [np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in video.frames]
    )
    masks = np.zeros((video.num_frames, video.num_instances, h, w), dtype=bool)
    for t in range(video.num_frames):
        for k in range(video.num_instances):
            m = Image.fromarray(video.masks[t, k].astype(np.uint8) * 255)
            masks[t, k] = np.asarray(m.resize((w, h), Image.NEAREST)) > 127
    return Video(video.name, frames, masks, video.classes, video.class_names, video.occlusions)
