"""Weights files: which one ``default`` means, what a file says about itself, its version.

A weights file is safetensors with a header that stores the model's config (and training
notes); its version is the file's stem and the start of its sha256, so that checkpoints,
tracks and analytics name the exact weights they came from, and a checkpoint is never
resumed with other weights.

Torch-free on purpose: the control plane (the API, the stream manager, drivers that only
start workers) reads a file's input size and version without loading the network, so its
processes never import torch. :func:`ausm_stream.model.ausm.load_model` builds the network.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ausm_stream.errors import ConfigError, InvalidInputError
from ausm_stream.model.config import AUSMConfig

WEIGHTS_FORMAT = "ausm-stream-weights"
"""The header's ``format``: a file without it was not written by ``AUSM.save_weights``."""
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "shapes-tiny.safetensors"
"""The shipped model (see weights/MODEL_CARD.md): what the pipeline and the demo load."""


def weights_path(weights: str) -> Path:
    """The file that a ``model.weights`` setting names (``default``: :data:`DEFAULT_WEIGHTS`)."""
    path = DEFAULT_WEIGHTS if weights == "default" else Path(weights)
    if not path.is_file():
        raise ConfigError(f"model.weights: {str(path)!r} does not exist")
    return path


def version_of(path: Path) -> str:
    """``stem@sha256-prefix``: the same name for the same bytes, wherever the file lies."""
    return f"{path.stem}@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def read_metadata(path: str | Path) -> dict[str, str]:
    """A weights file's header metadata (config, training notes), without the tensors."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"weights file {str(path)!r} does not exist")
    from safetensors import safe_open  # numpy framework: the header alone, no torch

    with safe_open(str(path), "numpy") as fh:
        metadata = fh.metadata() or {}
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise InvalidInputError(f"{path} is not an ausm-stream weights file")
    return metadata


def read_config(path: str | Path) -> AUSMConfig:
    """The config stored in a weights file, read from its header."""
    return AUSMConfig.from_dict(json.loads(read_metadata(path)["config"]))


def weights_info(weights: str) -> tuple[AUSMConfig, str]:
    """The config and version of the file a ``model.weights`` setting names, without
    building the model: what drivers that only start workers and ingest need (input size,
    version)."""
    path = weights_path(weights)
    return read_config(path), version_of(path)
