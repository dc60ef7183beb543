"""The AUSM network, its streaming state and the tracking bookkeeping.

Knows nothing of Kafka, Ray or storage. Public API::

    from ausm_stream.model import AUSM, AUSMConfig, StreamState
"""

from ausm_stream.model.ausm import AUSM, DEFAULT_WEIGHTS
from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.prompts import box_masks, point_masks
from ausm_stream.model.state import StreamState
from ausm_stream.model.tracking import StepResult

__all__ = [
    "AUSM",
    "DEFAULT_WEIGHTS",
    "AUSMConfig",
    "StepResult",
    "StreamState",
    "box_masks",
    "point_masks",
]
