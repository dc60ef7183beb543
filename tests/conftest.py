"""Shared fixtures: small deterministic models and synthetic frames."""

from __future__ import annotations

import pytest
import torch

from ausm_stream.model import AUSM, AUSMConfig


def make_model(seed: int = 0, **overrides) -> AUSM:
    """A tiny model with seeded random weights (trained weights are not needed for invariants)."""
    torch.manual_seed(seed)
    return AUSM(AUSMConfig.preset("tiny", **overrides)).eval()


def make_frames(n: int, seed: int = 0, size: tuple[int, int] = (128, 128)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *size, 3), dtype=torch.uint8, generator=g)


def disc_mask(size: tuple[int, int], cx: float, cy: float, r: float) -> torch.Tensor:
    ys = torch.arange(size[0], dtype=torch.float32)[:, None]
    xs = torch.arange(size[1], dtype=torch.float32)[None, :]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


@pytest.fixture(scope="session")
def tiny_model() -> AUSM:
    return make_model()
