"""Per-stream state: a typed, fixed-size dataclass, serialised with safetensors (never pickle).

Everything one stream needs to continue lives here: the Mamba conv/SSM states of every
compressor layer for every pixel of the 1/8 grid, ``X_{t-1}``, the ID slots (A_t, M_t) with
their track table, prompts waiting for the next frame, and the counters that make ID
sampling deterministic. Its byte size depends only on the architecture config, never on how
long the stream has run or how many objects it holds.

The blob records the config's architecture fingerprint and a SHA-256 of its tensors, so a
blob from another config, a truncated upload or a flipped byte is refused with a clear error.
The same state always gives the same bytes, so checkpoints can be compared and deduplicated
by content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from ausm_stream.errors import StateError
from ausm_stream.model.config import AUSMConfig, StateDtype

STATE_FORMAT = "ausm-stream-state"
STATE_VERSION = "6"
"""6: the propagation memory (``memory_*``, empty unless ``AUSMConfig.memory_frames``);
5: ``slot_age``, and ``slot_appearance`` sized by ``AUSMConfig.look_dim``. Blobs of older
versions are refused (no migration is provided: such a stream starts afresh)."""
_COUNTERS = ("seed", "frames_seen", "alloc_count", "next_track_id")
RECURRENT = ("x_prev", "conv", "ssm")
"""The recurrent memory, stored in ``AUSMConfig.state_dtype``; the rest keeps its own type."""
_FLOATS = tuple(getattr(torch, name) for name in typing.get_args(StateDtype))


@dataclass
class StreamState:
    """The recurrent memory and track table of one stream (MODEL.md section 4, SYSTEM.md)."""

    arch: str
    """Architecture fingerprint of the config this state belongs to."""
    x_prev: Tensor  # (D, h8, w8) state_dtype: X_{t-1}
    conv: Tensor  # (L, cells of the history grid, d_inner, d_conv) state_dtype
    ssm: Tensor  # (L, cells of the history grid, d_inner, d_state) state_dtype
    slot_active: Tensor  # (N_id,) bool: the slot's ID vector is allocated (in A_t)
    slot_masks: Tensor  # (N_id, h8, w8) float32: M_t on the 1/8 grid
    slot_track_id: Tensor  # (N_id,) int64: user-facing track id, -1 when free
    slot_object_id: Tensor  # (N_id,) int64: caller's prompt object id, -1 when unprompted
    slot_missing: Tensor  # (N_id,) int64: consecutive frames without a visible mask
    slot_box: Tensor  # (N_id, 4) float32: x0, y0, x1, y1 of the mask when last visible
    slot_label: Tensor  # (N_id,) int64: class shown when last visible (gates re-identification)
    slot_class_evidence: Tensor  # (N_id, C) float32: class probabilities summed while visible
    slot_appearance: Tensor  # (N_id, look_dim) float32: remembered look (tracking/looks.py)
    slot_age: Tensor  # (N_id,) int64: frames the identity has been visible
    pending_object_id: Tensor  # (N_id,) int64: prompts for the next frame, -1 = none
    pending_masks: Tensor  # (N_id, H, W) bool
    slot_soft_masks: Tensor  # (N_id or 0, h8, w8) float32: M_t as probabilities (memory labels)
    memory_features: Tensor  # (F, look_dim, h8, w8) float16: anchor, then newest first
    memory_labels: Tensor  # (F, N_id, h8, w8) float16: each slot's mask on those frames
    memory_valid: Tensor  # (F,) bool; F = 1 + memory_frames, or 0 (model/memory.py)
    memory_anchor_due: Tensor  # (1,) bool: the newest frame is the anchor, labels pending
    seed: int
    frames_seen: int
    alloc_count: int
    next_track_id: int

    # -- convenience -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.x_prev.device

    @property
    def active_track_ids(self) -> list[int]:
        return sorted(int(t) for t in self.slot_track_id[self.slot_active].tolist())

    def tensors(self) -> dict[str, Tensor]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }

    def to(self, device: torch.device | str) -> StreamState:
        """A copy on another device (state paging between accelerator and host)."""
        moved = {k: v.to(device) for k, v in self.tensors().items()}
        return dataclasses.replace(self, **moved)

    def clone(self) -> StreamState:
        return dataclasses.replace(self, **{k: v.clone() for k, v in self.tensors().items()})

    # -- serialisation ---------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """safetensors bytes; the same length for a given config, whatever the stream did."""
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.tensors().items()}
        # Pending prompt masks travel bit-packed: 8x smaller, still fixed size.
        tensors["pending_masks"] = torch.from_numpy(
            np.packbits(tensors["pending_masks"].numpy(), axis=-1)
        )
        for name in _COUNTERS:
            tensors[name] = torch.tensor([getattr(self, name)], dtype=torch.int64)
        metadata = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "arch": self.arch,
            "pending_width": str(self.pending_masks.shape[-1]),
            "sha256": _digest(tensors),
        }
        return _canonical_header(st_save(tensors, metadata=metadata))

    @classmethod
    def from_bytes(
        cls, blob: bytes, cfg: AUSMConfig, device: str | torch.device = "cpu"
    ) -> StreamState:
        """Read a blob written by :meth:`to_bytes`; raises :class:`StateError` if it is not one
        for ``cfg`` or if any byte changed. A blob written under another ``state_dtype``
        loads, its recurrent memory cast to ``cfg``'s (exact from a narrower type)."""
        metadata = safetensors_metadata(blob)
        if metadata.get("format") != STATE_FORMAT:
            raise StateError("blob is not an ausm-stream state (format tag missing)")
        if metadata.get("version") != STATE_VERSION:
            raise StateError(
                f"state format version {metadata.get('version')!r} is not "
                f"supported (this build reads {STATE_VERSION})"
            )
        if metadata.get("arch") != cfg.arch_fingerprint():
            raise StateError(
                f"state blob belongs to another model config (arch {metadata.get('arch')}, "
                f"this model {cfg.arch_fingerprint()}); restore it with the config that wrote it"
            )
        try:
            tensors = st_load(blob)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise StateError(f"state blob is corrupt: {exc}") from exc
        if _digest(tensors) != metadata.get("sha256"):
            raise StateError(
                "state blob is corrupt: checksum mismatch (bytes changed after it was written)"
            )
        expected = empty_state_tensors(cfg)
        width = int(metadata.get("pending_width", "0"))
        packed = tensors.pop("pending_masks", None)
        if packed is None or width != cfg.image_size[1]:
            raise StateError("state blob is corrupt: pending prompt masks missing or misshaped")
        tensors["pending_masks"] = torch.from_numpy(
            np.unpackbits(packed.numpy(), axis=-1, count=width).astype(bool)
        )
        counters = {}
        for name in _COUNTERS:
            value = tensors.pop(name, None)
            if value is None or value.shape != (1,):
                raise StateError(f"state blob is corrupt: counter {name!r} missing")
            counters[name] = int(value.item())
        for name in RECURRENT:
            got = tensors.get(name)
            if got is not None and got.dtype in _FLOATS:
                tensors[name] = got.to(expected[name].dtype)
        for name, ref in expected.items():
            got = tensors.get(name)
            if got is None or got.shape != ref.shape or got.dtype != ref.dtype:
                desc = "missing" if got is None else f"{tuple(got.shape)} {got.dtype}"
                raise StateError(
                    f"state tensor {name!r} is {desc}, expected "
                    f"{tuple(ref.shape)} {ref.dtype} for this config"
                )
        extra = set(tensors) - set(expected)
        if extra:
            raise StateError(f"state blob has unknown tensors {sorted(extra)}")
        return cls(
            arch=cfg.arch_fingerprint(), **{k: v.to(device) for k, v in tensors.items()}, **counters
        )


def state_torch_dtype(cfg: AUSMConfig) -> torch.dtype:
    """``cfg.state_dtype`` as a torch dtype (the config itself stays torch-free)."""
    return getattr(torch, cfg.state_dtype)


def empty_state_tensors(cfg: AUSMConfig) -> dict[str, Tensor]:
    """Fresh tensors of a stream that has seen nothing (the recurrent ones zero)."""
    h, w = cfg.grid_size
    cells = cfg.history_grid_size[0] * cfg.history_grid_size[1]
    n = cfg.n_id
    layers = cfg.compressor_layers
    dtype = state_torch_dtype(cfg)
    frames = 1 + cfg.memory_frames if cfg.memory_frames else 0
    return {
        "x_prev": torch.zeros(cfg.d_model, h, w, dtype=dtype),
        "conv": torch.zeros(layers, cells, cfg.d_inner, cfg.d_conv, dtype=dtype),
        "ssm": torch.zeros(layers, cells, cfg.d_inner, cfg.d_state, dtype=dtype),
        "slot_active": torch.zeros(n, dtype=torch.bool),
        "slot_masks": torch.zeros(n, h, w),
        "slot_track_id": torch.full((n,), -1, dtype=torch.int64),
        "slot_object_id": torch.full((n,), -1, dtype=torch.int64),
        "slot_missing": torch.zeros(n, dtype=torch.int64),
        "slot_box": torch.zeros(n, 4),
        "slot_label": torch.full((n,), -1, dtype=torch.int64),
        "slot_class_evidence": torch.zeros(n, cfg.num_classes),
        "slot_appearance": torch.zeros(n, cfg.look_dim),
        "slot_age": torch.zeros(n, dtype=torch.int64),
        "pending_object_id": torch.full((n,), -1, dtype=torch.int64),
        "pending_masks": torch.zeros(n, *cfg.image_size, dtype=torch.bool),
        "slot_soft_masks": torch.zeros(n if frames else 0, h, w),
        "memory_features": torch.zeros(frames, cfg.look_dim, h, w, dtype=torch.float16),
        "memory_labels": torch.zeros(frames, n, h, w, dtype=torch.float16),
        "memory_valid": torch.zeros(frames, dtype=torch.bool),
        "memory_anchor_due": torch.zeros(1, dtype=torch.bool),
    }


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _canonical_header(blob: bytes) -> bytes:
    """The same blob with its JSON header's keys sorted: safetensors writes the metadata map
    in hash order, so two saves of one state would differ in bytes. Sorting keeps the
    header's length (only the order changes), so the tensor offsets still hold."""
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    if len(header) > n:  # never seen: safetensors writes compact JSON; keep its bytes then
        return blob
    return blob[:8] + header.encode().ljust(n) + blob[8 + n :]


def safetensors_metadata(blob: bytes) -> dict[str, str]:
    """The safetensors header's ``__metadata__``, read without touching tensor data."""
    if not isinstance(blob, bytes | bytearray | memoryview) or len(blob) < 8:
        raise StateError("state blob is corrupt: too short to be safetensors")
    n = int.from_bytes(bytes(blob[:8]), "little")
    if n <= 0 or 8 + n > len(blob):
        raise StateError("state blob is corrupt: header length out of range (truncated?)")
    try:
        header = json.loads(bytes(blob[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"state blob is corrupt: unreadable header ({exc})") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise StateError("state blob is corrupt: header has no metadata")
    return meta
