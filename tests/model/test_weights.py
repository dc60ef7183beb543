"""Weights round trip through safetensors with the config inside."""

from __future__ import annotations

import pytest
import torch

from ausm_stream.model import AUSM, AUSMConfig
from tests.conftest import make_frames, make_model


def test_save_and_load_give_identical_outputs(tiny_model, tmp_path):
    path = tmp_path / "w.safetensors"
    tiny_model.save_weights(path)
    assert AUSM.read_config(path) == tiny_model.cfg  # from the header, no tensors loaded
    loaded = AUSM.from_weights(path, fg_threshold=0.9)
    assert (
        loaded.cfg.fg_threshold == 0.9
        and loaded.cfg.arch_fingerprint() == tiny_model.cfg.arch_fingerprint()
    )
    frames = make_frames(2)
    a = tiny_model.step([tiny_model.init_state()], frames[:1])[0]
    b = loaded.step([loaded.init_state()], frames[:1])[0]
    assert torch.equal(a.mask_logits, b.mask_logits)


def test_bad_weight_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        AUSM.from_weights(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an ausm-stream weights file"):
        AUSM.from_weights(tmp_path / "other.safetensors")


def test_weights_of_another_architecture_name_what_differs(tmp_path):
    from safetensors.torch import save_file

    from ausm_stream.errors import InvalidInputError
    from ausm_stream.model.versions import WEIGHTS_FORMAT

    small = make_model()
    other = AUSMConfig.preset("tiny", d_model=small.cfg.d_model * 2)
    tensors = {k: v.contiguous() for k, v in small.state_dict().items()}
    path = tmp_path / "mislabelled.safetensors"
    save_file(tensors, str(path), metadata={"format": WEIGHTS_FORMAT, "config": other.to_json()})
    with pytest.raises(InvalidInputError, match="another architecture") as err:
        AUSM.from_weights(path)
    assert "shapes differ" in str(err.value) and "mislabelled" in str(err.value)
