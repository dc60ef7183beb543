"""Teacher-forced clips (MODEL.md section 5): history and targets for a parallel pass.

Each instance gets a random ID slot and a random switch time ``s`` between its first visible
frame and the clip's end. Up to ``s`` it is a *detection* target (Hungarian-matched to the
detection queries); after ``s`` it is a *tracking* target on its own slot, and its ground
truth mask of the previous frame is in the history. A tracked instance that is hidden at a
frame is supervised as "no object" on its slot (no mask loss) and stays in the history with
an empty mask, which is exactly what inference does during an occlusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ausm_stream.errors import InvalidInputError
from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.data.video import Video


@dataclass
class FrameTargets:
    track: dict[int, tuple[int, Tensor | None]]
    """slot -> (class or -1 for no object, (h4, w4) soft mask or None)."""
    det_classes: Tensor  # (g,) int64
    det_masks: Tensor  # (g, h4, w4) float


@dataclass
class ClipBatch:
    frames: Tensor  # (B, T, H, W, 3) uint8
    history_masks: Tensor  # (B, T, N_id, H, W) bool
    history_active: Tensor  # (B, T, N_id) bool
    targets: list[list[FrameTargets]]  # [b][t]


def small_masks(masks: np.ndarray) -> Tensor:
    """(..., H, W) bool -> (..., H/4, W/4) soft targets at the mask-logit resolution."""
    t = torch.from_numpy(masks).float()
    lead = t.shape[:-2]
    pooled = F.avg_pool2d(t.reshape(-1, 1, *t.shape[-2:]), 4)
    return pooled.reshape(*lead, *pooled.shape[-2:])


def make_batch(videos: list[Video], cfg: AUSMConfig, rng: np.random.Generator) -> ClipBatch:
    lengths = {v.num_frames for v in videos}
    if len(lengths) != 1:
        raise InvalidInputError(f"clips in a batch need one length, got {sorted(lengths)}")
    for v in videos:
        if v.size != cfg.image_size:
            raise InvalidInputError(f"video {v.name} is {v.size}, the model takes {cfg.image_size}")
    (t_len,) = lengths
    b_len, n_id = len(videos), cfg.n_id
    hist_masks = torch.zeros(b_len, t_len, n_id, *cfg.image_size, dtype=torch.bool)
    hist_active = torch.zeros(b_len, t_len, n_id, dtype=torch.bool)
    targets: list[list[FrameTargets]] = []
    for b, video in enumerate(videos):
        k_len = min(video.num_instances, n_id)
        visible = video.masks[:, :k_len].any(axis=(2, 3))  # (T, K)
        slots = rng.permutation(n_id)[:k_len]
        first = visible.argmax(axis=0)
        switch = np.array([rng.integers(f, t_len) for f in first], dtype=np.int64)
        small = small_masks(video.masks[:, :k_len])
        per_frame = []
        for t in range(t_len):
            track, det_c, det_m = {}, [], []
            for i in range(k_len):
                if t > switch[i]:
                    hist_active[b, t, slots[i]] = True
                    hist_masks[b, t, slots[i]] = torch.from_numpy(video.masks[t - 1, i])
                    track[int(slots[i])] = (
                        (int(video.classes[i]), small[t, i]) if visible[t, i] else (-1, None)
                    )
                elif t >= first[i] and visible[t, i]:
                    det_c.append(int(video.classes[i]))
                    det_m.append(small[t, i])
            h4, w4 = cfg.mask_size
            per_frame.append(
                FrameTargets(
                    track,
                    torch.tensor(det_c, dtype=torch.int64),
                    torch.stack(det_m) if det_m else torch.zeros(0, h4, w4),
                )
            )
        targets.append(per_frame)
    frames = torch.from_numpy(np.stack([v.frames for v in videos]))
    return ClipBatch(frames, hist_masks, hist_active, targets)
