"""Choosing a device, explicitly; results leave it once per step; the scan's backend choice
is stated in the log. (The CUDA paths themselves: tests/test_cuda.py, run where a GPU is.)"""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from ausm_stream.errors import ConfigError, InvalidInputError
from ausm_stream.model import load_model
from ausm_stream.model.device import resolve_device
from ausm_stream.model.scan import _logged_backends, mamba_ssm_problem, resolve_backend
from ausm_stream.model.tracking import HOST_FIELDS, results_to_host
from ausm_stream.operators.worker import model_settings
from ausm_stream.pipeline.config import PipelineConfig
from tests.conftest import make_frames, make_model


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
def test_cuda_where_there_is_none_is_an_error_that_says_so():
    with pytest.raises(InvalidInputError, match="torch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(InvalidInputError, match="no CUDA device"):
        load_model("default", "cuda")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InvalidInputError, match="one of"):
        resolve_device("tpu")


def test_worker_device_settings_are_checked_with_the_config():
    cfg = PipelineConfig.from_dict({"worker": {"device": "cuda", "gpus": 1}})
    assert (cfg.worker.device, cfg.worker.gpus, cfg.worker.autocast) == ("cuda", 1, "off")
    with pytest.raises(ConfigError, match=r"worker\.gpus is 0"):
        PipelineConfig.from_dict({"worker": {"device": "cuda"}})
    with pytest.raises(ConfigError, match=r"worker\.device must be one of"):
        PipelineConfig.from_dict({"worker": {"device": "gpu"}})
    with pytest.raises(ConfigError, match=r"worker\.autocast must be one of"):
        PipelineConfig.from_dict({"worker": {"autocast": "int8"}})
    with pytest.raises(ConfigError, match=r"worker\.scan_backend must be one of"):
        PipelineConfig.from_dict({"worker": {"scan_backend": "cuda"}})
    with pytest.raises(ConfigError, match=r"worker\.batch_cells"):
        PipelineConfig.from_dict({"worker": {"batch_cells": 0}})


def test_a_workers_model_takes_the_scan_and_batch_settings_of_its_config():
    """The pipeline configuration (and so the Helm chart's ``pipeline.extra``) reaches the
    model's scan backend and batch size, not only the weights file."""
    default = PipelineConfig.from_dict({})
    model, _ = load_model("default", "cpu", **model_settings(default.worker))
    assert (model.cfg.scan_backend, model.cfg.batch_cells) == ("auto", 1024)
    tuned = PipelineConfig.from_dict({"worker": {"scan_backend": "torch", "batch_cells": 4096}})
    model, _ = load_model("default", "cpu", **model_settings(tuned.worker))
    assert (model.cfg.scan_backend, model.cfg.batch_cells) == ("torch", 4096)
    assert model.cfg.state_dtype == "float16" and model.cfg.step_lanes == 1


class CountCopies(TorchFunctionMode):
    """Counts the tensor copies to the host (``Tensor.cpu``) made inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.cpu:
            self.copies += 1
        return func(*args, **(kwargs or {}))


def test_a_batch_of_results_leaves_the_device_in_one_copy():
    model = make_model(image_size=(64, 64), fg_threshold=0.5)
    states = [model.init_state(seed=i) for i in range(5)]
    results = model.step(states, make_frames(5, size=(64, 64)))
    assert sum(len(r) for r in results) > 0  # tracks to copy
    with CountCopies() as counter:
        host = results_to_host(results)
    assert counter.copies == 1  # however many streams, tracks and fields
    for r, h in zip(results, host, strict=True):
        for name in HOST_FIELDS:
            got = getattr(h, name)
            assert torch.equal(getattr(r, name), got) and got.is_cpu
            assert got.dtype == getattr(r, name).dtype


def test_the_scan_backend_choice_is_logged_with_its_reason(caplog, monkeypatch):
    _logged_backends.clear()
    cuda = torch.device("cuda")  # a device object only: nothing runs on it here
    with caplog.at_level(logging.INFO, logger="ausm_stream.model.scan"):
        assert resolve_backend("auto", cuda) == "torch"  # mamba-ssm is not installed here
        monkeypatch.setattr("ausm_stream.model.scan.mamba_ssm_available", lambda: True)
        assert resolve_backend("auto", cuda) == "mamba_ssm"
        assert resolve_backend("auto", cuda, carried_state=True) == "torch"
        assert resolve_backend("auto", torch.device("cpu")) == "torch"
    said = [r.getMessage() for r in caplog.records]
    assert any("mamba-ssm is not installed" in line for line in said)
    assert any("selective scan: mamba_ssm" in line for line in said)
    assert any("a carried state (the fused scan starts from zero)" in line for line in said)
    assert any("tensors on cpu" in line for line in said)


def test_a_broken_mamba_ssm_build_is_refused_with_its_reason(tmp_path, monkeypatch, caplog):
    """A mamba-ssm built for another torch imports its package but not its kernels: ``auto``
    keeps our scan and says why, instead of choosing kernels that fail at their first call."""
    package = tmp_path / "mamba_ssm"
    (package / "ops").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "ops" / "__init__.py").write_text(
        "raise ImportError('selective_scan_cuda.so: undefined symbol: _ZN3c10')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mamba_ssm_problem.cache_clear()
    _logged_backends.clear()
    try:
        with caplog.at_level(logging.INFO, logger="ausm_stream.model.scan"):
            assert resolve_backend("auto", torch.device("cuda")) == "torch"
        with pytest.raises(InvalidInputError, match="kernels do not import"):
            resolve_backend("mamba_ssm", torch.device("cuda"))
    finally:
        mamba_ssm_problem.cache_clear()
        for name in [m for m in sys.modules if m.startswith("mamba_ssm")]:
            del sys.modules[name]
    assert any("undefined symbol" in r.getMessage() for r in caplog.records)
