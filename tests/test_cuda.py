"""The GPU paths, run wherever a CUDA GPU is (``pytest -m cuda``); skipped elsewhere.

No machine of this project has a GPU: these tests were written against the CPU paths they
mirror and have not been run (README, "GPU workers"). Each compares the CUDA path with the
reference that the CPU tests pin down."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ausm_stream.model import load_model
from ausm_stream.model.scan import (
    mamba_ssm_available,
    selective_scan,
    selective_scan_cuda,
    selective_state_update,
    selective_state_update_cuda,
)
from ausm_stream.model.tracking import results_to_host
from ausm_stream.operators.processor import StreamProcessor
from ausm_stream.pipeline.records import FrameChunk
from tests.conftest import make_frames, make_model
from tests.model.test_scan import random_inputs

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none"
    ),
]
needs_kernels = pytest.mark.skipif(
    not mamba_ssm_available(), reason="needs mamba-ssm (pip install 'ausm-stream[cuda]')"
)
CUDA = torch.device("cuda")


def scan_inputs(b=3, d=32, n=16, length=24, seed=0) -> dict[str, torch.Tensor]:
    """The CPU scan tests' random inputs (float64 there), as float32 on the GPU."""
    args, _ = random_inputs(b, d, n, length, seed)
    return {k: v.float().to(CUDA) for k, v in args.items()}


@needs_kernels
def test_the_fused_scan_equals_ours():
    x = scan_inputs()
    y_k, h_k = selective_scan_cuda(**x)
    y_t, h_t = selective_scan(**x, delta_softplus=True)
    torch.testing.assert_close(y_k, y_t, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h_k, h_t, atol=1e-4, rtol=1e-4)


@needs_kernels
def test_the_step_kernel_equals_ours_and_leaves_the_state_alone():
    x = scan_inputs(length=1)
    state = torch.randn(3, 32, 16, device=CUDA)
    before = state.clone()
    args = dict(
        u=x["u"][..., 0],
        delta=x["delta"][..., 0],
        A=x["A"],
        B=x["B"][..., 0],
        C=x["C"][..., 0],
        D=x["D"],
        z=x["z"][..., 0],
        delta_bias=x["delta_bias"],
        delta_softplus=True,
    )
    y_k, h_k = selective_state_update_cuda(state, **args)
    y_t, h_t = selective_state_update(state, **args)
    assert torch.equal(state, before)
    torch.testing.assert_close(y_k, y_t, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h_k, h_t, atol=1e-4, rtol=1e-4)


def test_the_model_steps_on_cuda_as_on_the_cpu():
    cpu = make_model(image_size=(64, 64), fg_threshold=0.5)
    gpu = make_model(image_size=(64, 64), fg_threshold=0.5).to(CUDA)
    frames = make_frames(6, size=(64, 64))
    on_cpu, on_gpu = [cpu.init_state(seed=1)], [gpu.init_state(seed=1)]
    assert on_gpu[0].slot_masks.is_cuda
    for t in range(6):
        a = cpu.step(on_cpu, frames[t : t + 1])[0]
        b = results_to_host(gpu.step(on_gpu, frames[t : t + 1]))[0]
        assert torch.equal(a.track_ids, b.track_ids), t
        assert (a.masks == b.masks).float().mean() > 0.999, t


def test_batched_equals_single_stream_on_cuda():
    model = make_model(image_size=(64, 64), fg_threshold=0.5).to(CUDA)
    frames = make_frames(4 * 5, size=(64, 64)).view(5, 4, 64, 64, 3)
    together = [model.init_state(seed=i) for i in range(4)]
    alone = [model.init_state(seed=i) for i in range(4)]
    for t in range(5):
        batched = results_to_host(model.step(together, frames[t]))
        for i in range(4):
            single = results_to_host(model.step([alone[i]], frames[t, i : i + 1]))[0]
            # cuBLAS picks kernels by batch shape: equal up to float rounding, not in bits
            assert torch.equal(batched[i].track_ids, single.track_ids), (t, i)
            agree = (batched[i].masks == single.masks).float().mean()
            assert agree > 0.999, (t, i, agree)
            torch.testing.assert_close(batched[i].scores, single.scores, atol=1e-4, rtol=0)


def test_a_worker_steps_its_streams_on_cuda():
    """The worker's processor with the model ``worker.device: cuda`` loads: tracks come out
    on the host, as the sinks take them."""
    model, _ = load_model("default", "cuda")
    assert model.device.type == "cuda"
    out = []
    processor = StreamProcessor(model, out.append)
    frames = make_frames(8, size=model.cfg.image_size).numpy()
    idx = np.arange(8)
    processor.on_record(FrameChunk("cam", idx, idx * 10**8, idx + 10**18, 128, 128, frames))
    processor.drain()
    assert [f.frame_idx for f in out] == list(range(8))
    assert all(isinstance(f.masks, np.ndarray) for f in out)
