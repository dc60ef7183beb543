"""Between a source's pixels and the model's input: how ingest maps frames, and so where
prompts drawn on a source frame (masks, boxes, points) land on the model's input.

Ingest resizes each frame to the model's input as a whole (see :mod:`.ingest`), so a source
pixel (x, y) lands at (x * w / W, y * h / H) of the model's h x w input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ausm_stream.errors import InvalidInputError


@dataclass(frozen=True)
class SourceToModel:
    source: tuple[int, int]
    """The source frame's (height, width)."""
    model: tuple[int, int]
    """The model input's (height, width)."""

    def check_mask_size(self, height: int, width: int) -> None:
        if (height, width) != self.source:
            raise InvalidInputError(
                f"mask is {height}x{width}, the stream's frames are {self.source[0]}x"
                f"{self.source[1]} (height x width): draw masks on a source frame"
            )

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """A mask at the source's size, resized (nearest) to the model's."""
        self.check_mask_size(*mask.shape)
        h, w = self.model
        img = Image.fromarray(mask.astype(np.uint8) * 255)
        return np.asarray(img.resize((w, h), Image.NEAREST)) > 127

    def box(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """A box ``(x0, y0, x1, y1)`` in source pixels, in the model input's pixels."""
        x0, y0, x1, y1 = box
        sh, sw = self.source
        if not (0 <= x0 < x1 <= sw and 0 <= y0 < y1 <= sh):
            raise InvalidInputError(
                f"box {list(box)} must satisfy 0 <= x0 < x1 <= {sw} and 0 <= y0 < y1 <= {sh} "
                "(source pixels)"
            )
        sx, sy = self._scale()
        return x0 * sx, y0 * sy, x1 * sx, y1 * sy

    def points(self, points: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
        """``(x, y)`` points in source pixels (pixel centres), in the model input's pixels."""
        sh, sw = self.source
        bad = [list(p) for p in points if not (0 <= p[0] < sw and 0 <= p[1] < sh)]
        if not points or bad:
            raise InvalidInputError(
                f"points {bad or '[]'}: give at least one (x, y) with 0 <= x < {sw} and "
                f"0 <= y < {sh} (source pixels)"
            )
        sx, sy = self._scale()
        h, w = self.model
        inside = 1e-6  # a source pixel's centre maps inside the model input, edges included
        return [
            (
                min(max((x + 0.5) * sx - 0.5, 0.0), w - inside),
                min(max((y + 0.5) * sy - 0.5, 0.0), h - inside),
            )
            for x, y in points
        ]

    def _scale(self) -> tuple[float, float]:
        return self.model[1] / self.source[1], self.model[0] / self.source[0]
