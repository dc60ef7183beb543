"""COCO run-length encoding of masks, shared by the dataset formats and the track records.

A leaf module of the root package so that ``model`` and ``pipeline`` use one implementation
without importing each other. Counts are the compressed COCO string (``bytes``), what
pycocotools and every COCO-aware tool decode.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

from ausm_stream.errors import InvalidInputError


def encode(masks: np.ndarray) -> list[bytes]:
    """(K, H, W) bool -> K compressed RLE count strings."""
    if masks.ndim != 3:
        raise InvalidInputError(f"masks to encode must be (K, H, W), got {masks.shape}")
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [r["counts"] for r in rles]


def decode(counts: bytes | str, height: int, width: int) -> np.ndarray:
    """One RLE count string -> (H, W) bool."""
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    try:
        mask = mask_utils.decode({"size": [int(height), int(width)], "counts": raw})
    except Exception as exc:  # pycocotools raises bare Exceptions on malformed counts
        raise InvalidInputError(f"mask RLE does not decode at {height}x{width}: {exc}") from exc
    return mask.astype(bool)
