"""Configs: presets, clear errors naming the field, JSON round trip, the paper preset runs."""

from __future__ import annotations

import pytest
import torch

from ausm_stream.model import AUSM, AUSMConfig
from tests.conftest import make_frames


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"image_size": (100, 128)}, "image_size"),
        ({"d_model": 0}, "d_model"),
        ({"n_heads": 5}, "n_heads"),
        ({"fg_threshold": 1.5}, "fg_threshold"),
        ({"backbone": "resnet"}, "backbone"),
        ({"class_names": ()}, "class_names"),
        ({"scan_backend": "cuda"}, "scan_backend"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"AUSMConfig.{field}"):
        AUSMConfig.preset("tiny", **overrides)


def test_unknown_preset_and_fields():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        AUSMConfig.preset("huge")
    with pytest.raises(ValueError, match="d_modle"):
        AUSMConfig.preset("tiny", d_modle=8)
    with pytest.raises(ValueError, match="colour"):
        AUSMConfig.from_dict({"colour": 1})


def test_json_round_trip_and_fingerprint():
    cfg = AUSMConfig.preset("tiny", image_size=(64, 96))
    import json

    again = AUSMConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert (
        cfg.arch_fingerprint()
        == AUSMConfig.preset("tiny", image_size=(64, 96), fg_threshold=0.3).arch_fingerprint()
    )
    assert cfg.arch_fingerprint() != AUSMConfig.preset("tiny").arch_fingerprint()


def test_paper_preset_has_paper_sizes_and_steps():
    cfg = AUSMConfig.preset("paper", image_size=(64, 64))
    assert (cfg.d_model, cfg.compressor_layers, cfg.history_decoder_layers) == (256, 6, 6)
    assert (cfg.n_det, cfg.n_id) == (100, 100)
    torch.manual_seed(0)
    model = AUSM(cfg).eval()
    r = model.step([model.init_state()], make_frames(1, size=(64, 64)))[0]
    assert r.class_logits.shape == (200, 2) and r.mask_logits.shape == (200, 16, 16)
