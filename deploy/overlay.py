"""Contact sheets that let a person see the masks: source frames with tracks painted on."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from ausm_stream import rle

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
"""What a contact sheet needs of the track records (select these before ``to_pylist``)."""

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


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def paint(image: np.ndarray, rows: list[dict]) -> Image.Image:
    """One frame with its tracks' masks (one color per track id), ids and labels painted on.

    ``image`` is (H, W, 3) uint8 at any size: masks are scaled to it, and the boxes (in the
    source pixels of each row) to match."""
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    labels = []
    for row in rows:
        mask = rle.decode(row["mask_rle"], row["mask_height"], row["mask_width"])
        big = (
            np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST))
            > 127
        )
        colour = PALETTE[int(row["track_id"]) % len(PALETTE)]
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


def contact_sheet(
    video: Path, tracks: list[dict], out: Path, columns: int = 4, count: int = 8
) -> Path:
    """``count`` evenly spaced frames, each with its tracks' masks, ids and labels.

    ``tracks`` are the stream's track records as dicts (``Table.to_pylist()``).
    """
    frames = _frames(video)
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    tiles = []
    for idx in picks:
        tile = paint(frames[idx], [r for r in tracks if r["frame_idx"] == idx])
        ImageDraw.Draw(tile).text((3, 3), f"frame {idx}", fill=(255, 255, 255))
        tiles.append(tile)
    th, tw = tiles[0].height, tiles[0].width
    rows_n = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tw, rows_n * th), (0, 0, 0))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * tw, (i // columns) * th))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
