"""Per-frame feature extractors: features at 1/4 (for mask detail) and 1/8 (X_t, D channels).

Pretrained weights cannot be downloaded here, so the default is a small convolutional
backbone of our own, trained with the rest of the model. A timm model can be used by name
(``backbone="timm:resnet18"``) when timm is installed, with weights from a local file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ausm_stream.errors import InvalidInputError
from ausm_stream.model.config import AUSMConfig
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


class ConvBackbone(nn.Module):
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

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        f4 = self.stage4(self.stem(images))
        return f4, self.stage8(f4)


class TimmBackbone(nn.Module):
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

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.body(images)
        return feats[self.i4], self.proj8(feats[self.i8])


def _load_tensor_file(path: Path) -> dict[str, Tensor]:
    """Local weights only: safetensors, or a torch file read with ``weights_only`` (no code)."""
    if not path.is_file():
        raise InvalidInputError(f"backbone_weights {str(path)!r} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def build_backbone(cfg: AUSMConfig) -> nn.Module:
    return ConvBackbone(cfg) if cfg.backbone == "conv" else TimmBackbone(cfg)


def normalise_frames(frames: Tensor) -> Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W), ImageNet mean/std as timm backbones expect."""
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    mean = x.new_tensor(_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(_STD).view(1, 3, 1, 1)
    return (x - mean) / std
