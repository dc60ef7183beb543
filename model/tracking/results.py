"""What the tracker returns per stream and frame, and its batched copy to the host."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class StepResult:
    """The visible tracks of one stream at one frame, ordered by track id.

    ``prompt_object_ids`` is -1 for tracks that were not prompted. ``class_logits`` and
    ``mask_logits`` are the raw network outputs of every query (ID slots first, then the
    detection queries), for analysis and tests.
    """

    frame_index: int
    track_ids: Tensor  # (K,) int64
    labels: Tensor  # (K,) int64, index into the config's class_names
    label_names: list[str]
    scores: Tensor  # (K,) float32
    masks: Tensor  # (K, H, W) bool
    boxes: Tensor  # (K, 4) float32: x0, y0, x1, y1 pixel edges of the masks
    prompt_object_ids: Tensor  # (K,) int64
    class_logits: Tensor  # (Q, C + 1)
    mask_logits: Tensor  # (Q, h4, w4)

    def __len__(self) -> int:
        return int(self.track_ids.numel())


HOST_FIELDS = ("track_ids", "labels", "prompt_object_ids", "scores", "boxes", "masks")
"""The per-track tensors of a :class:`StepResult` (the raw logits stay where they are), the
widest types first: packed in this order, every field's bytes start aligned for its type."""


def results_to_host(results: list[StepResult]) -> list[StepResult]:
    """A batch's results with their track tensors on the CPU, in one transfer for the whole
    batch (on a GPU every copy waits for the device): each field of every stream is
    concatenated, all fields are packed as bytes into one buffer, copied once, and cut and
    viewed back as their types. The raw ``class_logits`` and ``mask_logits`` are not copied."""
    lengths = [len(r) for r in results]
    fields = [torch.cat([getattr(r, name) for r in results]) for name in HOST_FIELDS]
    packed = torch.cat([f.contiguous().flatten().view(torch.uint8) for f in fields]).cpu()
    sizes = [f.numel() * f.element_size() for f in fields]
    host = {
        name: raw.view(f.dtype).reshape(f.shape).split(lengths)
        for name, f, raw in zip(HOST_FIELDS, fields, packed.split(sizes), strict=True)
    }
    return [
        dataclasses.replace(r, **{name: host[name][i] for name in HOST_FIELDS})
        for i, r in enumerate(results)
    ]
