"""Mask2Former-style set losses (MODEL.md section 5): class CE, mask BCE and dice.

Weights are Mask2Former's defaults: class 2 (no-object class weighted 0.1), BCE 5, dice 5;
the same weights price the Hungarian matching of detection queries to new objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor


@dataclass(frozen=True)
class LossWeights:
    cls: float = 2.0
    bce: float = 5.0
    dice: float = 5.0
    no_object: float = 0.1


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-mask dice loss, (k, P) logits vs (k, P) soft targets -> (k,)."""
    p = logits.sigmoid()
    num = 2 * (p * targets).sum(-1) + 1
    return 1 - num / (p.sum(-1) + targets.sum(-1) + 1)


def pairwise_costs(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """BCE and dice cost of every query mask (q, P) against every target (g, P) -> (q, g)."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    bce = (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[-1]
    p = logits.sigmoid()
    dice = 1 - (2 * p @ targets.T + 1) / (p.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)
    return bce, dice


@torch.no_grad()
def hungarian_match(
    class_logits: Tensor, mask_logits: Tensor, classes: Tensor, masks: Tensor, w: LossWeights
) -> tuple[np.ndarray, np.ndarray]:
    """Match detection queries (q, C+1) / (q, P) to targets (g,) / (g, P): (query, target) idx."""
    if classes.numel() == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    prob = class_logits.softmax(-1)[:, classes]  # (q, g)
    bce, dice = pairwise_costs(mask_logits, masks)
    cost = -w.cls * prob + w.bce * bce + w.dice * dice
    rows, cols = linear_sum_assignment(cost.float().cpu().numpy())
    return rows, cols


def frame_loss(
    class_logits: Tensor,
    mask_logits: Tensor,
    query_valid: Tensor,
    class_targets: Tensor,
    mask_targets: dict[int, Tensor],
    w: LossWeights,
) -> tuple[Tensor, Tensor, int]:
    """Class loss summed over valid queries, and mask loss summed over supervised queries.

    class_targets (Q,) with the no-object index for empty queries; mask_targets maps a query
    index to its (P,) soft target. Returns (class loss, mask loss sum, number of masks).
    """
    n_cls = class_logits.shape[-1]
    weight = class_logits.new_ones(n_cls)
    weight[-1] = w.no_object
    ce = F.cross_entropy(
        class_logits[query_valid], class_targets[query_valid], weight=weight, reduction="sum"
    ) / weight[class_targets[query_valid]].sum().clamp(min=1)
    if not mask_targets:
        return w.cls * ce, class_logits.new_zeros(()), 0
    idx = torch.tensor(sorted(mask_targets), device=mask_logits.device)
    logits = mask_logits[idx].flatten(1)
    targets = torch.stack([mask_targets[i] for i in sorted(mask_targets)]).flatten(1)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)
    mask = w.bce * bce.sum() + w.dice * dice_loss(logits, targets).sum()
    return w.cls * ce, mask, len(mask_targets)
