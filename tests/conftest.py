"""Shared fixtures: small deterministic models and synthetic frames."""

from __future__ import annotations

import time
from pathlib import Path

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


def wait_for(what: str, check, timeout_s: float = 90.0):
    """``check()``'s first truthy value, polled every 0.5 s; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def disc_mask(size: tuple[int, int], cx: float, cy: float, r: float) -> torch.Tensor:
    ys = torch.arange(size[0], dtype=torch.float32)[:, None]
    xs = torch.arange(size[1], dtype=torch.float32)[None, :]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


@pytest.fixture(scope="session")
def tiny_model() -> AUSM:
    return make_model()


@pytest.fixture(scope="module")
def broker():
    """A real Kafka-protocol broker (Tansu) on a free loopback port, one per test module."""
    from ausm_stream.pipeline.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint (moto server) on loopback; yields its URL."""
    from moto.server import ThreadedMotoServer

    from ausm_stream.pipeline.broker import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_storage(endpoint: str, bucket: str):
    from ausm_stream.pipeline.config import StorageConfig

    return StorageConfig(
        url=f"s3://{bucket}/data", endpoint=endpoint, access_key="test", secret_key="test-secret"
    )


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray bound to loopback, one per test module (``ray.init`` takes seconds)."""
    import ray

    ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def write_random_weights(folder: Path) -> Path:
    """A weights file of the tiny preset with seeded random weights, in ``folder``."""
    torch.manual_seed(0)
    path = folder / "random-tiny.safetensors"
    AUSM(AUSMConfig.preset("tiny", fg_threshold=0.8)).save_weights(path)
    return path


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """A weights file of the tiny preset with seeded random weights."""
    return write_random_weights(tmp_path_factory.mktemp("weights"))
