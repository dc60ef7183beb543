"""Readers and writers for the annotation formats users bring.

- **DAVIS** (2016 and 2017 layouts): ``JPEGImages/<res>/<video>/<frame>.jpg`` and
  ``Annotations/<res>/<video>/<frame>.png`` where ``<res>`` is whatever resolution folder is
  there (``480p``, ``240p``, ``Full-Resolution``; ``480p`` wins among several unless one is
  named); ``ImageSets/2017/<split>.txt`` or ``ImageSets/2016/<split>.txt`` lists videos.
  Annotations may be palette PNGs whose index is the object id (DAVIS 2017), grey PNGs
  with 0/255 for one object (DAVIS 2016), or LA, RGB(A) and 16-bit PNGs: the distinct
  non-zero labels of a video become its objects (:func:`read_annotations`). Videos keep
  the annotations' resolution; evaluation scores there. DAVIS has no classes: objects are
  read as class 0.
- **YouTube-VIS**: a JSON with ``videos`` (``file_names`` relative to an image root),
  ``annotations`` (per instance: ``video_id``, ``category_id``, ``segmentations`` with one
  COCO RLE or null per frame) and ``categories``.

The synthetic generator writes both, and the tests read them back.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from ausm_stream import rle
from ausm_stream.errors import InvalidInputError
from ausm_stream.model.data.video import Video

DAVIS_RES = "480p"
"""The resolution folder ``write_davis`` writes and ``read_davis`` prefers among several."""
DAVIS_YEARS = ("2017", "2016")
"""``ImageSets/<year>/`` folders searched for a split, in this order."""
VOID = 255
"""DAVIS 2017's "void" index in palette annotations: background for scoring, as in
davis2017-evaluation (``davis.py`` sets 255 to 0)."""


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


def davis_resolution(root: Path, resolution: str | None = None) -> str:
    """The resolution folder to read under ``root/JPEGImages``: ``resolution`` when given,
    else the only one there, else ``480p`` when it is among several."""
    img_root = root / "JPEGImages"
    if not img_root.is_dir():
        raise InvalidInputError(f"{root} is not a DAVIS folder: {img_root} is missing")
    found = sorted(p.name for p in img_root.iterdir() if p.is_dir())
    if resolution is not None:
        if resolution not in found:
            raise InvalidInputError(
                f"DAVIS folder {root} has no resolution {resolution!r} under JPEGImages "
                f"(it has {', '.join(found) or 'none'})"
            )
        return resolution
    if len(found) == 1:
        return found[0]
    if DAVIS_RES in found:
        return DAVIS_RES
    raise InvalidInputError(
        f"DAVIS folder {root}: choose one of the resolutions {', '.join(found) or '(none)'} "
        "under JPEGImages, e.g. davis:ROOT:SPLIT:RESOLUTION"
    )


def davis_split(root: Path, split: str, resolution: str) -> list[str]:
    """Video names of a split file.

    ``split`` is a file name under ``ImageSets/2017`` or else ``ImageSets/2016`` (``val``), or
    a path under ``ImageSets`` that picks the folder (``2016/val``). A file holds one video
    name a line, or, in DAVIS 2016's own ``ImageSets/480p/*.txt`` (searched after the years,
    under the resolution read and under 480p), frame paths
    (``/JPEGImages/480p/bear/00000.jpg /Annotations/...``) whose folder names the video.
    """
    sets = root / "ImageSets"
    if "/" in split:
        candidates = [sets / f"{split}.txt"]
    else:
        folders = dict.fromkeys([*DAVIS_YEARS, resolution, DAVIS_RES, "."])
        candidates = [sets / folder / f"{split}.txt" for folder in folders]
    listing = next((p for p in candidates if p.is_file()), None)
    if listing is None:
        tried = ", ".join(str(p.relative_to(root)) for p in candidates)
        raise InvalidInputError(f"DAVIS split {split!r} of {root}: none of {tried} exists")
    names: list[str] = []
    for line in listing.read_text().splitlines():
        token = line.split()[0] if line.strip() else ""
        name = Path(token).parent.name if "/" in token else token
        if name and name not in names:
            names.append(name)
    return names


def read_davis(root: Path, split: str | None = None, resolution: str | None = None) -> list[Video]:
    """The videos of a DAVIS folder (all of them, or a split's; see :func:`davis_split`) at
    one resolution (see :func:`davis_resolution`), annotations in any mode
    (:func:`read_annotations`). Frames without an annotation file have no object in them."""
    res = davis_resolution(root, resolution)
    img_root = root / "JPEGImages" / res
    names = (
        davis_split(root, split, res)
        if split
        else sorted(p.name for p in img_root.iterdir() if p.is_dir())
    )
    videos = []
    for name in names:
        frames_p = sorted((img_root / name).glob("*.jpg"))
        if not frames_p:
            raise InvalidInputError(f"DAVIS video {name} has no frames in {img_root / name}")
        frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in frames_p])
        anns = [root / "Annotations" / res / name / (p.stem + ".png") for p in frames_p]
        masks = read_annotations(anns, frames.shape[1:3])
        videos.append(
            Video(name, frames, masks, np.zeros(masks.shape[1], dtype=np.int64), ("object",))
        )
    return videos


def read_annotations(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    """Per-frame annotation PNGs of one video -> (T, K, H, W) bool object masks.

    Every mode maps a pixel to a label, 0 being background; the distinct non-zero labels
    found across the whole video become objects 1..K in sorted order:

    - ``P`` (DAVIS 2017): the palette index. Index 255 is void and read as background
      (davis2017-evaluation does so), unless it is the video's only non-zero index: then
      it is a DAVIS 2016 mask saved with a palette.
    - ``L``, ``I;16``, ``I``, ``1``: the grey value (DAVIS 2016's 0/255 is one object).
    - ``LA``, ``PA``: the grey value or index; alpha is ignored.
    - ``RGB``, ``RGBA``: the colour (black is background; alpha is ignored). Colours of the
      DAVIS palette sort by their index there, so an RGB copy of a palette file reads the
      same; other colours come after, by value.

    A missing file is a frame without objects. All files of a video must share one kind of
    label (indices, grey values or colours) and the frames' size.
    """
    labels: list[np.ndarray | None] = []
    kinds = set()
    for p in paths:
        if not p.is_file():
            labels.append(None)
            continue
        kind, label = _label_map(p)
        if label.shape != size:
            raise InvalidInputError(
                f"annotation {p} is {label.shape[1]}x{label.shape[0]} (WxH), its frame "
                f"{size[1]}x{size[0]}: annotations must have their frames' size"
            )
        kinds.add(kind)
        labels.append(label)
    if len(kinds) > 1:
        raise InvalidInputError(
            f"annotations of {paths[0].parent} mix {' and '.join(sorted(kinds))} PNGs: "
            "save them all in one mode"
        )
    present = set()
    for label in labels:
        if label is not None:
            present.update(np.unique(label).tolist())
    present.discard(0)
    if kinds == {"index"} and len(present) > 1:
        present.discard(VOID)
    key = _colour_order if kinds == {"colour"} else int
    ids = sorted(present, key=key)
    masks = np.zeros((len(paths), len(ids), *size), dtype=bool)
    for t, label in enumerate(labels):
        if label is not None:
            for k, value in enumerate(ids):
                masks[t, k] = label == value
    return masks


def _label_map(path: Path) -> tuple[str, np.ndarray]:
    """(kind, (H, W) labels) of one annotation PNG: kind is index, grey or colour."""
    img = Image.open(path)
    mode = img.mode
    if mode in ("P", "PA"):
        return "index", np.asarray(img.getchannel(0) if mode == "PA" else img)
    if mode in ("L", "LA", "1") or mode.startswith("I"):
        grey = np.asarray(img.getchannel(0) if mode == "LA" else img)
        return "grey", grey.astype(np.uint8) if mode == "1" else grey
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB")).astype(np.uint32)
        return "colour", (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    raise InvalidInputError(
        f"annotation {path} has PNG mode {mode}: use P (DAVIS), L, LA, I;16, RGB or RGBA"
    )


@functools.cache
def _palette_index() -> dict[int, int]:
    """Packed colour -> index in the DAVIS palette (its 256 colours are distinct)."""
    pal = _palette()
    return {(pal[3 * i] << 16) | (pal[3 * i + 1] << 8) | pal[3 * i + 2]: i for i in range(256)}


def _colour_order(colour: int) -> int:
    """Sort key of a packed colour: its DAVIS palette index, else after all of them."""
    return _palette_index().get(colour, 256 + colour)


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
