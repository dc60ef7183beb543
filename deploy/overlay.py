"""Tracks painted on a frame, so that a person sees the masks: for previews and renders."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

from ausm_stream import rle
from ausm_stream.pipeline.tracks import scale_mask

COLUMNS = [
    "frame_idx",
    "track_id",
    "label",
    "bbox",
    "mask_rle",
    "mask_height",
    "mask_width",
    "source_height",
    "source_width",
]
"""What painting needs of the track records (select these before ``to_pylist``)."""

PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
        (170, 110, 40),
    ],
    dtype=np.float32,
)
"""Colours of track ids 0-11: twelve that tell apart well."""

_GOLDEN = (5**0.5 - 1) / 2


def track_colour(track_id: int) -> np.ndarray:
    """A track's colour, RGB float32: :data:`PALETTE` for ids below 12, then hues a golden
    ratio of the circle apart, so that ids never share a colour (a busy stream reaches ids
    in the hundreds, and a palette that cycled would paint tracks 1 and 13 alike)."""
    if 0 <= track_id < len(PALETTE):
        return PALETTE[track_id]
    rgb = colorsys.hsv_to_rgb((track_id * _GOLDEN) % 1.0, 0.8, 0.95)
    return np.array(rgb, dtype=np.float32) * 255


def paint(image: np.ndarray, rows: list[dict]) -> Image.Image:
    """One frame with its tracks' masks (one color per track id), ids and labels painted on.

    ``image`` is (H, W, 3) uint8 at any size: masks are scaled to it, and the boxes (in the
    source pixels of each row) to match."""
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    labels = []
    for row in rows:
        mask = rle.decode(row["mask_rle"], row["mask_height"], row["mask_width"])
        big = scale_mask(mask, h, w)
        colour = track_colour(int(row["track_id"]))
        img[big] = 0.45 * img[big] + 0.55 * colour
        sx, sy = w / row["source_width"], h / row["source_height"]
        labels.append(
            (
                row["bbox"]["x0"] * sx,
                row["bbox"]["y0"] * sy,
                f"{row['track_id']} {row['label']}",
                colour,
            )
        )
    tile = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(tile)
    for x, y, text, colour in labels:
        draw.text((x + 2, max(0, y - 11)), text, fill=tuple(int(c) for c in colour))
    return tile
