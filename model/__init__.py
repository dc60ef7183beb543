"""The AUSM network, its streaming state and the tracking bookkeeping.

Knows nothing of Kafka, Ray or storage. Public API::

    from ausm_stream.model import AUSM, AUSMConfig, StreamState, load_model

Names are imported on first use (PEP 562), so that ``ausm_stream.model.versions`` and
``ausm_stream.model.prompts`` load without torch: the control plane reads weights headers and
draws prompts, and its processes stay small.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ausm_stream.model.ausm import AUSM, load_model
    from ausm_stream.model.config import AUSMConfig
    from ausm_stream.model.prompts import box_masks, point_masks
    from ausm_stream.model.state import StreamState
    from ausm_stream.model.tracking import StepResult
    from ausm_stream.model.versions import DEFAULT_WEIGHTS

_HOMES = {
    "AUSM": "ausm",
    "load_model": "ausm",
    "AUSMConfig": "config",
    "DEFAULT_WEIGHTS": "versions",
    "StepResult": "tracking",
    "StreamState": "state",
    "box_masks": "prompts",
    "point_masks": "prompts",
}

__all__ = [
    "AUSM",
    "DEFAULT_WEIGHTS",
    "AUSMConfig",
    "StepResult",
    "StreamState",
    "box_masks",
    "load_model",
    "point_masks",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
