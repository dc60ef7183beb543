"""Between a source's pixels and the model's input: how ingest maps frames, and so how
prompts drawn on a source frame (masks, boxes, points) become masks at the model's size.

Ingest resizes each frame to the model's input as a whole (see :mod:`.ingest`), so a source
pixel (x, y) lands at (x * w / W, y * h / H) of the model's h x w input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ausm_stream.errors import InvalidInputError

POINT_RADIUS = 0.03
"""A point prompt marks a disk of this fraction of the model input's shorter side (at least
one pixel) around each point: the model takes masks, and a few pixels of an object are
enough for it to find the rest."""


@dataclass(frozen=True)
class SourceToModel:
    source: tuple[int, int]
    """The source frame's (height, width)."""
    model: tuple[int, int]
    """The model input's (height, width)."""

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """A mask at the source's size, resized (nearest) to the model's."""
        if mask.shape != self.source:
            raise InvalidInputError(
                f"mask is {mask.shape[0]}x{mask.shape[1]}, the stream's frames are "
                f"{self.source[0]}x{self.source[1]} (height x width): draw masks on a source frame"
            )
        h, w = self.model
        img = Image.fromarray(mask.astype(np.uint8) * 255)
        return np.asarray(img.resize((w, h), Image.NEAREST)) > 127

    def box(self, box: Sequence[float]) -> np.ndarray:
        """A filled box ``(x0, y0, x1, y1)`` in source pixels, as a mask at the model's size."""
        x0, y0, x1, y1 = box
        sh, sw = self.source
        if not (0 <= x0 < x1 <= sw and 0 <= y0 < y1 <= sh):
            raise InvalidInputError(
                f"box {list(box)} must satisfy 0 <= x0 < x1 <= {sw} and 0 <= y0 < y1 <= {sh} "
                "(source pixels)"
            )
        h, w = self.model
        sy, sx = h / sh, w / sw
        out = np.zeros(self.model, bool)
        r0, r1 = int(y0 * sy), max(int(np.ceil(y1 * sy)), int(y0 * sy) + 1)
        c0, c1 = int(x0 * sx), max(int(np.ceil(x1 * sx)), int(x0 * sx) + 1)
        out[r0:r1, c0:c1] = True
        return out

    def points(self, points: Sequence[Sequence[float]]) -> np.ndarray:
        """Disks around ``(x, y)`` points in source pixels, as one mask at the model's size."""
        sh, sw = self.source
        bad = [list(p) for p in points if not (0 <= p[0] < sw and 0 <= p[1] < sh)]
        if not points or bad:
            raise InvalidInputError(
                f"points {bad or '[]'}: give at least one (x, y) with 0 <= x < {sw} and "
                f"0 <= y < {sh} (source pixels)"
            )
        h, w = self.model
        radius = max(1.0, POINT_RADIUS * min(h, w))
        ys, xs = np.mgrid[0:h, 0:w]
        out = np.zeros(self.model, bool)
        for x, y in points:
            cx, cy = (x + 0.5) * w / sw - 0.5, (y + 0.5) * h / sh - 0.5
            out |= (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        return out
