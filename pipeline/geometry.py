"""Where a source frame lies on the model's input, and the way back to source pixels.

Ingest fits every frame into the model's input (``ingest.fit``):

- ``letterbox`` (the default): scaled by one factor, so shapes keep their proportions, and
  centred, with black bands filling the rest. A 16:9 camera on a square input keeps its
  objects round; the bands are cropped off every mask before it is written, so they never
  produce tracks.
- ``stretch``: scaled to fill the whole input, each axis by its own factor (shapes are
  squeezed; nothing is padded).

The content box (where the frame lies, in whole input pixels) travels in every frame chunk
(``content_*`` columns), so the worker never recomputes it and external producers may choose
their own. The model's masks come at its input resolution: the worker cuts them to the
content box, and writes a track's mask at the box's resolution, with its box and area in
source pixels. Readers scale a mask by ``source / mask`` size on each axis, as for any track
(:func:`~.tracks.source_masks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from ausm_stream.errors import InvalidInputError

Fit = Literal["letterbox", "stretch"]
FITS: tuple[Fit, ...] = ("letterbox", "stretch")


@dataclass(frozen=True)
class Placement:
    """A source frame of ``source`` (height, width) placed on a ``model`` input at the
    content box ``top, left, height, width`` (model-input pixels)."""

    source: tuple[int, int]
    model: tuple[int, int]
    top: int
    left: int
    height: int
    width: int

    def __post_init__(self) -> None:
        h, w = self.model
        ok = min(self.top, self.left) >= 0 and min(self.height, self.width) > 0
        if not ok or self.top + self.height > h or self.left + self.width > w:
            raise InvalidInputError(
                f"content box top={self.top} left={self.left} height={self.height} "
                f"width={self.width} does not fit the {h}x{w} model input"
            )

    @classmethod
    def fit(cls, source: tuple[int, int], model: tuple[int, int], fit: Fit) -> Placement:
        """How ingest places a ``source`` frame: see the module docstring."""
        if fit not in FITS:
            raise InvalidInputError(f"fit must be one of {list(FITS)}, got {fit!r}")
        (sh, sw), (h, w) = source, model
        if fit == "stretch" or sh * w == sw * h:
            return cls(source, model, 0, 0, h, w)
        scale = min(h / sh, w / sw)
        height = min(h, max(1, round(sh * scale)))
        width = min(w, max(1, round(sw * scale)))
        return cls(source, model, (h - height) // 2, (w - width) // 2, height, width)

    @classmethod
    def whole(cls, source: tuple[int, int], model: tuple[int, int]) -> Placement:
        """A frame that fills the input (stretched, or already the model's size)."""
        return cls(source, model, 0, 0, *model)

    @property
    def content(self) -> tuple[int, int, int, int]:
        return self.top, self.left, self.height, self.width

    # -- source -> model (ingest, prompts) ---------------------------------------------------
    def place(self, content: np.ndarray) -> np.ndarray:
        """The model input holding ``content`` (height, width, 3), already scaled to the
        content box, with black bands around it."""
        if content.shape[:2] == self.model:
            return content
        out = np.zeros((*self.model, content.shape[2]), content.dtype)
        out[self.top : self.top + self.height, self.left : self.left + self.width] = content
        return out

    def check_mask_size(self, height: int, width: int) -> None:
        if (height, width) != self.source:
            raise InvalidInputError(
                f"mask is {height}x{width}, the stream's frames are {self.source[0]}x"
                f"{self.source[1]} (height x width): draw masks on a source frame"
            )

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """A mask at the source's size, resized (nearest) into the content box."""
        self.check_mask_size(*mask.shape)
        img = Image.fromarray(mask.astype(np.uint8) * 255)
        small = np.asarray(img.resize((self.width, self.height), Image.NEAREST)) > 127
        return self.place(small[..., None])[..., 0]

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
        return (
            self.left + x0 * sx,
            self.top + y0 * sy,
            self.left + x1 * sx,
            self.top + y1 * sy,
        )

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
        inside = 1e-6  # a source pixel's centre maps inside the content box, edges included
        return [
            (
                self.left + min(max((x + 0.5) * sx - 0.5, 0.0), self.width - inside),
                self.top + min(max((y + 0.5) * sy - 0.5, 0.0), self.height - inside),
            )
            for x, y in points
        ]

    def _scale(self) -> tuple[float, float]:
        return self.width / self.source[1], self.height / self.source[0]

    # -- model -> source (the worker's output) -----------------------------------------------
    def crop(self, planes: np.ndarray) -> np.ndarray:
        """Masks or images ``(k, h, w, ...)`` at the model input's size, cut to the content
        box (the bands dropped)."""
        if planes.shape[1:3] != self.model:
            raise InvalidInputError(
                f"cannot crop {planes.shape[1]}x{planes.shape[2]} planes to a content box of "
                f"the {self.model[0]}x{self.model[1]} model input"
            )
        return planes[:, self.top : self.top + self.height, self.left : self.left + self.width]
