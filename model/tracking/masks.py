"""Mask utilities the rules share: IoU, upsampling, boxes and their centres."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of bool masks a (..., m, H, W) and b (..., n, H, W) -> (..., m, n), with
    the same leading batch dimensions. Counts are exact in float32 (fewer than 2^24 pixels),
    so a batch's IoUs are those of its members one by one."""
    af, bf = a.flatten(-2).float(), b.flatten(-2).float()
    inter = af @ bf.transpose(-1, -2)
    union = af.sum(-1)[..., :, None] + bf.sum(-1)[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def upsample_masks(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Mask logits (k, h4, w4) -> bool masks (k, H, W) at the input size."""
    if mask_logits.shape[0] == 0:
        return torch.zeros(0, *size, dtype=torch.bool, device=mask_logits.device)
    up = F.interpolate(mask_logits[:, None], size=size, mode="bilinear", align_corners=False)
    return up[:, 0] > 0


def mask_boxes(masks: Tensor) -> Tensor:
    """x0, y0, x1, y1 (pixel edges) of non-empty bool masks (k, H, W) -> (k, 4) float32."""
    rows, cols = masks.any(2), masks.any(1)  # (k, H), (k, W)

    def first_last(hits: Tensor) -> tuple[Tensor, Tensor]:
        n = hits.shape[1]
        return hits.int().argmax(1), n - hits.flip(1).int().argmax(1)

    (y0, y1), (x0, x1) = first_last(rows), first_last(cols)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def box_centres(boxes: Tensor) -> Tensor:
    """(..., 4) boxes -> (..., 2) centres (x, y)."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2


def box_sizes(boxes: Tensor) -> Tensor:
    """(..., 4) boxes -> (...,) longer sides: the unit of the distance and jump gates."""
    return (boxes[..., 2:] - boxes[..., :2]).amax(-1)
