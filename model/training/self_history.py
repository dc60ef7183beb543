"""Histories from the model's own predictions (self-conditioning, issue 17).

Teacher forcing feeds the ground truth mask of frame t-1 as the history of frame t. At
inference the history is the model's own mask, so its errors feed back into the next step and
accumulate over a long stream (exposure bias). ``own_histories`` replaces the history of
every slot that was already tracked at the previous frame with what the model itself
predicted there, thresholded the way inference does (``tracking.upsample_masks`` and
``track_threshold``: a slot the model did not see gets an empty history, as inference gives
it). The first tracked frame of an instance keeps its teacher mask: inference starts a track
from a detection or a prompt, which is the best mask it will have.

One round feeds back one step of error; each further round feeds the previous round's
histories back in, so ``rounds`` passes compound the errors ``rounds`` steps deep (T rounds
would reproduce the frame-by-frame rollout exactly). The passes run without gradients; the
loss is then computed on one more pass, with gradients, over the model's own histories.
"""

from __future__ import annotations

import dataclasses

import torch

from ausm_stream.model.ausm import AUSM
from ausm_stream.model.tracking import upsample_masks
from ausm_stream.model.training.teacher import ClipBatch


@torch.no_grad()
def own_histories(model: AUSM, batch: ClipBatch, rounds: int) -> ClipBatch:
    """``batch`` with the tracked slots' histories predicted by ``model`` (see module doc)."""
    cfg = model.cfg
    active = batch.history_active
    carried = active[:, 1:] & active[:, :-1]  # (B, T-1, N): tracked at t-1 and t
    history = batch.history_masks.clone()
    if not bool(carried.any()):
        return batch
    for _ in range(rounds):
        out = model.forward_parallel(batch.frames, history, active)
        logits = out.mask_logits[:, :-1, : cfg.n_id]  # (B, T-1, N, h, w): frames 0..T-2
        scores = 1.0 - out.class_logits[:, :-1, : cfg.n_id].float().softmax(-1)[..., -1]
        masks = upsample_masks(logits.flatten(0, 2), cfg.image_size).view(
            *logits.shape[:3], *cfg.image_size
        )
        own = masks & (scores > cfg.track_threshold)[..., None, None]
        history[:, 1:] = torch.where(carried[..., None, None], own, history[:, 1:])
    return dataclasses.replace(batch, history_masks=history)
