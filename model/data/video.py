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


def visible_masks(full: np.ndarray) -> np.ndarray:
    """(T, K, H, W) whole masks of layers drawn in order (later on top) -> each layer's
    visible mask: its whole mask minus what the layers in front of it cover."""
    visible = full.copy()
    covered = np.zeros_like(full[:, 0])
    for k in range(full.shape[1] - 1, -1, -1):
        visible[:, k] &= ~covered
        covered |= full[:, k]
    return visible


def occlusion_spans(visible: np.ndarray, full: np.ndarray) -> list[tuple[int, int, int]]:
    """Spans where an instance is in the frame but entirely hidden, seen before and after."""
    spans = []
    seen = visible.any(axis=(2, 3))
    present = full.any(axis=(2, 3))
    for k in range(visible.shape[1]):
        t = 0
        while t < len(seen):
            if present[t, k] and not seen[t, k] and t > 0 and seen[t - 1, k]:
                end = t
                while end + 1 < len(seen) and present[end + 1, k] and not seen[end + 1, k]:
                    end += 1
                if end + 1 < len(seen) and seen[end + 1, k]:
                    spans.append((k, t, end))
                t = end + 1
            else:
                t += 1
    return spans


def layered_video(
    name: str,
    frames: np.ndarray,
    full: np.ndarray,
    classes: np.ndarray,
    class_names: tuple[str, ...],
) -> Video:
    """A generated video from its layers' whole masks (T, K, H, W), later layers on top:
    masks are the visible parts, layers never seen are left out, and full occlusions are
    listed (``Video.occlusions``)."""
    visible = visible_masks(full)
    keep = visible.any(axis=(0, 2, 3))
    video = Video(name, frames, visible[:, keep], classes[keep], class_names)
    video.occlusions = occlusion_spans(visible[:, keep], full[:, keep])
    return video
