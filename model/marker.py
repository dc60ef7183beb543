"""History Marker (MODEL.md section 3.1): paint each tracked object's ID vector into its pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GRID_STRIDE = 8


def masks_to_grid(masks: Tensor) -> Tensor:
    """Area-average masks (..., H, W) onto the 1/8 feature grid (..., H/8, W/8), as floats.

    Soft values keep sub-cell shape and position; an object smaller than a cell still leaves
    a fractional mark.
    """
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    grid = F.avg_pool2d(flat, GRID_STRIDE)
    return grid.reshape(*lead, *grid.shape[-2:])


class HistoryMarker(nn.Module):
    """``S[h,w] = sum_i M_i[h,w] A_i / (eps + sum_i M_i[h,w])`` over the active ID slots."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, id_vectors: Tensor, active: Tensor, grid_masks: Tensor) -> Tensor:
        """id_vectors (k, D), active (b, k) bool, grid_masks (b, k, h, w) -> S (b, D, h, w)."""
        weights = grid_masks * active[..., None, None].to(grid_masks.dtype)
        painted = torch.einsum("bkhw,kd->bdhw", weights, id_vectors)
        return painted / (self.eps + weights.sum(1, keepdim=True))
