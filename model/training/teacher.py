"""Teacher-forced clips (MODEL.md section 5): history and targets for a parallel pass.

Each instance gets a random ID slot and a random switch time ``s`` between its first visible
frame and the clip's end. Up to ``s`` it is a *detection* target (Hungarian-matched to the
detection queries); after ``s`` it is a *tracking* target on its own slot, and its ground
truth mask of the previous frame is in the history. A tracked instance that is hidden at a
frame is supervised as "no object" on its slot (no mask loss) and stays in the history with
an empty mask, which is exactly what inference does during an occlusion.

At inference the history holds the model's own masks, not the ground truth, and a model
trained only on perfect histories drifts once its masks are a little off (exposure bias).
``history_noise`` is the chance that a tracked instance's history mask at a frame is
degraded the way predictions are: shifted by up to ``MAX_SHIFT`` pixels and grown or shrunk
by up to ``MAX_MORPH`` pixels. (It is never emptied: a tracked object missing from the history
is one the detection queries are trained to claim, which would teach them the opposite.)

``history_drop`` teaches exactly that, on purpose: the chance that a tracked instance loses
its history for a span of up to ``MAX_DROP`` frames, as an inference track does when its
query misses the object or jumps off it (its slot stays active, its history mask empty).
Over the span the instance is a target of its own slot *and* of the detection queries: the
ID query should find it again from memory, and failing that a detection query should claim
it, which a model trained only on perfect histories learns never to do for an object that
was once tracked (the tracker then continues the lost track from the detection).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from ausm_stream.errors import InvalidInputError
from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.data.video import Video


@dataclass
class FrameTargets:
    track: dict[int, tuple[int, Tensor | None]]
    """slot -> (class or -1 for no object, soft mask at the batch's ``mask_stride`` or None)."""
    det_classes: Tensor  # (g,) int64
    det_masks: Tensor  # (g, H / mask_stride, W / mask_stride) float


@dataclass
class ClipBatch:
    frames: Tensor  # (B, T, H, W, 3) uint8
    history_masks: Tensor  # (B, T, N_id, H, W) bool
    history_active: Tensor  # (B, T, N_id) bool
    targets: list[list[FrameTargets]]  # [b][t]
    mask_stride: int = 4
    """Target masks are the ground truth average-pooled by this; the loss compares them with
    mask logits upsampled to their size (see ``objective.clip_loss``)."""

    def to(self, device: torch.device) -> ClipBatch:
        """The batch on ``device``, targets included (training on a GPU; on the CPU the
        same tensors)."""

        def frame(f: FrameTargets) -> FrameTargets:
            track = {s: (c, None if m is None else m.to(device)) for s, (c, m) in f.track.items()}
            return FrameTargets(track, f.det_classes.to(device), f.det_masks.to(device))

        return dataclasses.replace(
            self,
            frames=self.frames.to(device),
            history_masks=self.history_masks.to(device),
            history_active=self.history_active.to(device),
            targets=[[frame(f) for f in clip] for clip in self.targets],
        )


MASK_STRIDES = (1, 2, 4)


def target_masks(masks: np.ndarray, stride: int) -> Tensor:
    """(..., H, W) bool -> (..., H/stride, W/stride) soft targets."""
    t = torch.from_numpy(masks).float()
    if stride == 1:
        return t
    lead = t.shape[:-2]
    pooled = F.avg_pool2d(t.reshape(-1, 1, *t.shape[-2:]), stride)
    return pooled.reshape(*lead, *pooled.shape[-2:])


MAX_SHIFT = 4
MAX_MORPH = 3
MAX_DROP = 8


def perturb_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction of ``mask``: shifted, and grown or shrunk."""
    dy, dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2)
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    morph = int(rng.integers(-MAX_MORPH, MAX_MORPH + 1))
    if morph > 0:
        out = ndimage.binary_dilation(out, iterations=morph)
    elif morph < 0:
        out = ndimage.binary_erosion(out, iterations=-morph)
    return out


def make_batch(
    videos: list[Video],
    cfg: AUSMConfig,
    rng: np.random.Generator,
    history_noise: float = 0.0,
    mask_stride: int = 4,
    history_drop: float = 0.0,
) -> ClipBatch:
    if mask_stride not in MASK_STRIDES:
        raise InvalidInputError(f"mask_stride must be one of {MASK_STRIDES}, got {mask_stride}")
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
    # Its own stream, so that noise never changes the slots and switch times of a clip.
    noise_rng = rng.spawn(1)[0] if history_noise else None
    drop_rng = rng.spawn(1)[0] if history_drop else None
    for b, video in enumerate(videos):
        k_len = min(video.num_instances, n_id)
        visible = video.masks[:, :k_len].any(axis=(2, 3))  # (T, K)
        slots = rng.permutation(n_id)[:k_len]
        first = visible.argmax(axis=0)
        switch = np.array([rng.integers(f, t_len) for f in first], dtype=np.int64)
        small = target_masks(video.masks[:, :k_len], mask_stride)
        dropped = np.zeros((t_len, k_len), dtype=bool)  # frames whose history is lost
        for i in range(k_len):
            if drop_rng is not None and switch[i] + 1 < t_len and drop_rng.random() < history_drop:
                start = int(drop_rng.integers(switch[i] + 1, t_len))
                dropped[start : start + int(drop_rng.integers(1, MAX_DROP + 1)), i] = True
        per_frame = []
        for t in range(t_len):
            track, det_c, det_m = {}, [], []
            for i in range(k_len):
                if t > switch[i]:
                    hist_active[b, t, slots[i]] = True
                    previous = video.masks[t - 1, i]
                    if noise_rng is not None and noise_rng.random() < history_noise:
                        previous = perturb_mask(previous, noise_rng)
                    if not dropped[t, i]:
                        hist_masks[b, t, slots[i]] = torch.from_numpy(previous)
                    track[int(slots[i])] = (
                        (int(video.classes[i]), small[t, i]) if visible[t, i] else (-1, None)
                    )
                    if dropped[t, i] and visible[t, i]:
                        det_c.append(int(video.classes[i]))
                        det_m.append(small[t, i])
                elif t >= first[i] and visible[t, i]:
                    det_c.append(int(video.classes[i]))
                    det_m.append(small[t, i])
            per_frame.append(
                FrameTargets(
                    track,
                    torch.tensor(det_c, dtype=torch.int64),
                    torch.stack(det_m) if det_m else torch.zeros(0, *small.shape[-2:]),
                )
            )
        targets.append(per_frame)
    frames = torch.from_numpy(np.stack([v.frames for v in videos]))
    return ClipBatch(frames, hist_masks, hist_active, targets, mask_stride)
