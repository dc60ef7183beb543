"""Boxes and points as prompts: both become masks, the one form the model takes.

- A box ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive) becomes the filled rectangle,
  clipped to the frame. The tracking query then refines it to the object's shape from the
  next frame on, so a tight box works best.
- Points ``[(x, y), ...]`` become the union of discs of ``radius`` pixels (default: 2% of
  the shorter side, at least 2) around each point: a rough seed, best used with a box.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ausm_stream.errors import InvalidInputError


def box_masks(boxes: Sequence[Sequence[float]], size: tuple[int, int]) -> Tensor:
    """(K, 4) boxes -> (K, H, W) bool."""
    h, w = size
    out = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for k, box in enumerate(boxes):
        if len(box) != 4:
            raise InvalidInputError(f"box {k} must be (x0, y0, x1, y1), got {box}")
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        x0, x1 = max(0, x0), min(w, x1)
        y0, y1 = max(0, y0), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            raise InvalidInputError(f"box {k} {tuple(box)} is empty inside a {w}x{h} frame")
        out[k, y0:y1, x0:x1] = True
    return out


def point_masks(
    points: Sequence[Sequence[Sequence[float]]], size: tuple[int, int], radius: float | None = None
) -> Tensor:
    """Per object a list of (x, y) points -> (K, H, W) bool discs."""
    h, w = size
    r = radius if radius is not None else max(2.0, 0.02 * min(h, w))
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    out = torch.zeros(len(points), h, w, dtype=torch.bool)
    for k, pts in enumerate(points):
        if not pts:
            raise InvalidInputError(f"object {k} has no points")
        for x, y in pts:
            if not (0 <= x < w and 0 <= y < h):
                raise InvalidInputError(f"point ({x}, {y}) of object {k} lies outside {w}x{h}")
            out[k] |= (xs - x) ** 2 + (ys - y) ** 2 <= r * r
    return out
