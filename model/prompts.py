"""Boxes and points as prompts: both become masks, the one form the model takes.

- A box ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive) becomes the filled rectangle,
  clipped to the frame. The tracking query then refines it to the object's shape from the
  next frame on, so a tight box works best.
- Points ``[(x, y), ...]`` become the union of discs of ``radius`` pixels (default: 2% of
  the shorter side, at least 2) around each point: a rough seed, best used with a box.

Both are numpy, as prompt records carry them: the API draws them without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ausm_stream.errors import InvalidInputError


def box_masks(boxes: Sequence[Sequence[float]], size: tuple[int, int]) -> np.ndarray:
    """(K, 4) boxes -> (K, H, W) bool."""
    h, w = size
    out = np.zeros((len(boxes), h, w), dtype=bool)
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
) -> np.ndarray:
    """Per object a list of (x, y) points -> (K, H, W) bool discs."""
    h, w = size
    r = radius if radius is not None else max(2.0, 0.02 * min(h, w))
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    out = np.zeros((len(points), h, w), dtype=bool)
    for k, pts in enumerate(points):
        if not pts:
            raise InvalidInputError(f"object {k} has no points")
        for x, y in pts:
            if not (0 <= x < w and 0 <= y < h):
                raise InvalidInputError(f"point ({x}, {y}) of object {k} lies outside {w}x{h}")
            out[k] |= (xs - x) ** 2 + (ys - y) ** 2 <= r * r
    return out


def prompt_problem(
    masks: Any, object_ids: Sequence[int | None], size: tuple[int, int], max_objects: int
) -> str | None:
    """What is wrong with a prompt of ``masks`` (K, H, W) bool, numpy or torch, for
    ``object_ids`` (``None``: an id not given yet), for a model of input ``size`` whose ID
    buffer holds ``max_objects``; ``None`` when nothing is.

    The one prompt check: the model refuses a prompt with it
    (:meth:`~ausm_stream.model.ausm.AUSM.add_prompt`), a worker dead-letters a prompt record
    with it and the stream manager answers 400 with it, so all three say the same."""
    h, w = size
    shape = tuple(masks.shape)
    if len(shape) != 3 or shape[1:] != (h, w):
        return (
            f"prompt masks must be (K, {h}, {w}) at the model's input size, got {shape}; "
            "resize them like the frames"
        )
    if str(masks.dtype) not in ("bool", "torch.bool"):
        return f"prompt masks must be bool, got {masks.dtype}"
    if len(object_ids) != shape[0]:
        return f"{shape[0]} prompt masks but {len(object_ids)} object ids"
    given = [i for i in object_ids if i is not None]
    if len(set(given)) != len(given) or any(i < 0 for i in given):
        return f"object ids must be distinct and >= 0, got {list(object_ids)}"
    if shape[0] > max_objects:
        return (
            f"{shape[0]} prompted objects would exceed the ID buffer of {max_objects} "
            "(AUSMConfig.n_id)"
        )
    empty = [k for k, mask in enumerate(masks) if not bool(mask.any())]
    if empty:
        names = ", ".join(
            f"#{k} (no id yet)" if object_ids[k] is None else str(object_ids[k]) for k in empty
        )
        return (
            f"prompt masks for object ids [{names}] are empty: draw at least one pixel of "
            "each object at the model's input size"
        )
    return None
