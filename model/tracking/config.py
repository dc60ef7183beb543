"""The tracker's settings, apart from the network's."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from ausm_stream.model.config import AUSMConfig, Look


@dataclass(frozen=True)
class TrackerConfig:
    """Everything the tracker reads, taken from an :class:`AUSMConfig` by
    :meth:`from_model`. Each field has the name and meaning of the ``AUSMConfig`` field it
    comes from, whose docstring is the user-facing documentation; the tracker keeps no
    setting of its own, so a weights file's config stays the one place they are set."""

    # -- what is tracked: the frame size, the queries and the classes ---------------------
    image_size: tuple[int, int]
    n_id: int
    n_det: int
    class_names: tuple[str, ...]
    # -- tracks, prompts and detections ----------------------------------------------------
    fg_threshold: float
    track_threshold: float
    dedup_iou: float
    min_mask_area: int
    max_missing: int
    prompted_max_missing: int
    reid_distance: float
    reid_threshold: float
    prompted_handover: bool
    prompted_jump_gate: float
    unprompted_jump_gate: float
    connected_tracks: bool
    # -- looks -----------------------------------------------------------------------------
    look: Look
    appearance_margin: float
    reid_look: float

    @property
    def num_queries(self) -> int:
        """ID slots first, then the detection queries, as the network orders them."""
        return self.n_id + self.n_det

    @classmethod
    def from_model(cls, cfg: AUSMConfig) -> TrackerConfig:
        """The tracker's part of ``cfg``; cached, as it is asked for at every step."""
        return _from_model(cfg)


@functools.lru_cache(maxsize=64)
def _from_model(cfg: AUSMConfig) -> TrackerConfig:
    return TrackerConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrackerConfig)}
    )
