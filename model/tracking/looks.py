"""A track's look: what it shows under its mask, one vector per mask, compared by
Euclidean distance (``appearance_margin``, ``reid_look``).

``AUSMConfig.look`` chooses what a look is made of. The rules only ask a :class:`Look` for
the looks of masks and for how a remembered look follows a new one, so a new cue is one
more class here, not a branch in every rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ausm_stream.errors import InvalidInputError
from ausm_stream.model.tracking.config import TrackerConfig


class Look(Protocol):
    def of(self, masks: Tensor) -> Tensor:
        """The looks (k, look_dim) float32 of non-empty bool masks (k, H, W)."""
        ...

    def follow(self, remembered: Tensor, seen: Tensor, rate: Tensor) -> Tensor:
        """Remembered looks (k, look_dim) moved by ``rate`` (k,) towards ``seen`` ones."""
        ...


def _blend(remembered: Tensor, seen: Tensor, rate: Tensor) -> Tensor:
    return (1 - rate[:, None]) * remembered + rate[:, None] * seen


@dataclass(frozen=True)
class ColourLook:
    """The mean RGB in [0, 1] of the frame under the mask: tells the one-colour shapes of
    the synthetic data apart, and little else (a person in a dark coat looks like the dark
    doorway behind him)."""

    frame: Tensor  # (H, W, 3) uint8: the frame the network saw

    def of(self, masks: Tensor) -> Tensor:
        weights = masks.flatten(1).float()
        sums = weights @ self.frame.to(weights.device).flatten(0, 1).float()
        return sums / (255.0 * weights.sum(1, keepdim=True).clamp(min=1.0))

    def follow(self, remembered: Tensor, seen: Tensor, rate: Tensor) -> Tensor:
        return _blend(remembered, seen, rate)


@dataclass(frozen=True)
class FeatureLook:
    """The mean of the look features under the mask, L2-normalised: what the backbone saw
    there, whatever its colour. Masks are area-averaged onto the features' grid, so a cell
    the mask covers in part counts in part. Unit vectors, so distances lie in [0, 2]; a
    remembered look is normalised again after each move."""

    features: Tensor  # (C, h, w) float, any grid

    def of(self, masks: Tensor) -> Tensor:
        features = self.features.to(masks.device, torch.float32)
        cover = F.interpolate(masks.float()[:, None], size=features.shape[-2:], mode="area")
        # The weighted sum: dividing it by the coverage to get the mean would not change
        # its direction, which is all that is kept.
        return F.normalize(cover.flatten(1) @ features.flatten(1).T, dim=1)

    def follow(self, remembered: Tensor, seen: Tensor, rate: Tensor) -> Tensor:
        return F.normalize(_blend(remembered, seen, rate), dim=1)


def choose_look(
    cfg: TrackerConfig, look_dim: int, frame: Tensor | None, look_features: Tensor | None
) -> Look | None:
    """The look ``cfg.look`` names, or None when this step came without what it is made of
    (identities then follow the ID queries and positions alone). ``look_dim`` is the size
    of the looks the stream's state remembers."""
    if cfg.look == "colour":
        return None if frame is None else ColourLook(frame)
    if look_features is None:
        return None
    if look_features.ndim != 3 or look_features.shape[0] != look_dim:
        raise InvalidInputError(
            f"look_features must be ({look_dim}, h, w) for this model's look "
            f"(AUSMConfig.look_dim), got {tuple(look_features.shape)}"
        )
    return FeatureLook(look_features)
