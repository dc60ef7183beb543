"""The one in-memory form of an annotated video."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ausm_stream.errors import InvalidInputError


@dataclass
class Video:
    """Frames with per-instance masks.

    ``masks[t, k]`` is instance k's *visible* mask at frame t (empty while it is hidden or
    outside the frame); ``classes[k]`` indexes ``class_names``.
    """

    name: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, K, H, W) bool
    classes: np.ndarray  # (K,) int64
    class_names: tuple[str, ...]
    occlusions: list[tuple[int, int, int]] = field(default_factory=list)
    """(instance, first, last) frames during which an instance inside the frame is fully
    hidden by another, with the instance visible right before and right after."""

    def __post_init__(self) -> None:
        t, h, w, c = self.frames.shape
        if self.frames.dtype != np.uint8 or c != 3:
            raise InvalidInputError(f"video {self.name!r}: frames must be (T, H, W, 3) uint8")
        if self.masks.ndim != 4 or self.masks.shape[0] != t or self.masks.shape[2:] != (h, w):
            raise InvalidInputError(
                f"video {self.name!r}: masks {self.masks.shape} do not match frames "
                f"{self.frames.shape}"
            )
        if len(self.classes) != self.masks.shape[1]:
            raise InvalidInputError(
                f"video {self.name!r}: {len(self.classes)} classes for "
                f"{self.masks.shape[1]} instances"
            )

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_instances(self) -> int:
        return int(self.masks.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def clip(self, start: int, length: int) -> Video:
        """Frames [start, start + length) with the instances visible in them."""
        masks = self.masks[start : start + length]
        keep = masks.any(axis=(0, 2, 3))
        return Video(
            f"{self.name}[{start}:{start + length}]",
            self.frames[start : start + length],
            masks[:, keep],
            self.classes[keep],
            self.class_names,
        )
