"""The AUSM network, its streaming state and the tracking bookkeeping.

Knows nothing of Kafka, Ray or storage. Public API::

    from ausm_stream.model import AUSM, AUSMConfig, StreamState
"""

from ausm_stream.model.ausm import AUSM
from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.prompts import box_masks, point_masks
from ausm_stream.model.state import StreamState
from ausm_stream.model.tracking import StepResult

__all__ = ["AUSM", "AUSMConfig", "StepResult", "StreamState", "box_masks", "point_masks"]
