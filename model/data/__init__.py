"""Video data: a deterministic synthetic generator and readers/writers for real formats.

Every source yields :class:`Video` records (frames, per-instance masks, classes), so training
and evaluation never care where a video came from.
"""

from ausm_stream.model.data.synthetic import ShapesSpec, generate_video, split_videos
from ausm_stream.model.data.video import Video

__all__ = ["ShapesSpec", "Video", "generate_video", "split_videos"]
