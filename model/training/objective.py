"""The training loss of a teacher-forced clip, with deep supervision on every decoder stage.

Mask logits live at 1/4 of the input, and inference upsamples them bilinearly before
thresholding. Comparing them with ground truth pooled to 1/4 caps a mask's IoU near 0.93
on the synthetic shapes (the pooled target, upsampled, loses the boundary). With a finer
``mask_stride`` the loss compares the *upsampled* logits with finer targets, which is what
inference thresholds: logits fitted that way reach 0.98 (both measured by fitting free
logits on `val` masks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.network import NetOutputs
from ausm_stream.model.pixel_decoder import QueryPredictions
from ausm_stream.model.training.losses import LossWeights, frame_loss, hungarian_match
from ausm_stream.model.training.teacher import ClipBatch


def clip_loss(
    out: NetOutputs, batch: ClipBatch, cfg: AUSMConfig, weights: LossWeights | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Sum over decoder stages of (mean class loss per frame + mean mask loss per mask)."""
    w = weights or LossWeights()
    stages = [
        QueryPredictions(s.class_logits, upsampled_mask_logits(s.mask_logits, batch))
        for s in [*out.aux, QueryPredictions(out.class_logits, out.mask_logits)]
    ]
    total = out.class_logits.new_zeros(())
    logs = {"cls": 0.0, "mask": 0.0}
    for stage in stages:
        cls, mask = _stage_loss(stage, batch, cfg, w)
        total = total + cls + mask
        logs["cls"] += float(cls.detach()) / len(stages)
        logs["mask"] += float(mask.detach()) / len(stages)
    return total, logs


def upsampled_mask_logits(mask_logits: Tensor, batch: ClipBatch) -> Tensor:
    """(b, T, Q, h4, w4) -> (b, T, Q, H / stride, W / stride), bilinear as at inference."""
    size = tuple(n // batch.mask_stride for n in batch.frames.shape[2:4])
    if tuple(mask_logits.shape[-2:]) == size:
        return mask_logits
    flat = F.interpolate(mask_logits.flatten(0, 2).unsqueeze(1), size=size, mode="bilinear")
    return flat.squeeze(1).unflatten(0, mask_logits.shape[:3])


def _stage_loss(
    pred: QueryPredictions, batch: ClipBatch, cfg: AUSMConfig, w: LossWeights
) -> tuple[Tensor, Tensor]:
    no_object = cfg.num_classes
    n_id = cfg.n_id
    cls_sum = pred.class_logits.new_zeros(())
    mask_sum = pred.class_logits.new_zeros(())
    n_masks = 0
    frames = 0
    # unbind, not [b, t]: indexing would give every frame's backward a zero-filled gradient
    # of the whole clip (quadratic in clip length); unbind's backward stacks them once.
    all_class = pred.class_logits.flatten(0, 1).unbind(0)
    all_masks = pred.mask_logits.flatten(0, 1).unbind(0)
    for b, per_frame in enumerate(batch.targets):
        for t, tgt in enumerate(per_frame):
            class_logits = all_class[b * len(per_frame) + t]
            mask_logits = all_masks[b * len(per_frame) + t]
            device = class_logits.device
            class_targets = torch.full(
                (class_logits.shape[0],), no_object, dtype=torch.int64, device=device
            )
            mask_targets = {}
            for slot, (c, m) in tgt.track.items():
                if c >= 0:
                    class_targets[slot] = c
                    mask_targets[slot] = m
            rows, cols = hungarian_match(
                class_logits[n_id:],
                mask_logits[n_id:].flatten(1),
                tgt.det_classes,
                tgt.det_masks.flatten(1),
                w,
            )
            for q, g in zip(rows.tolist(), cols.tolist(), strict=True):
                class_targets[n_id + q] = tgt.det_classes[g]
                mask_targets[n_id + q] = tgt.det_masks[g]
            detections = torch.ones(cfg.n_det, dtype=torch.bool, device=device)
            valid = torch.cat([batch.history_active[b, t], detections])
            cls, mask, count = frame_loss(
                class_logits, mask_logits, valid, class_targets, mask_targets, w
            )
            cls_sum = cls_sum + cls
            mask_sum = mask_sum + mask
            n_masks += count
            frames += 1
    return cls_sum / max(frames, 1), mask_sum / max(n_masks, 1)
