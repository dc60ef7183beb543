"""The control plane's request and response bodies (pydantic), which are also its OpenAPI
schema. Coordinates in prompts are source pixels, as in the track records."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ausm_stream.operators.status import StreamStatus
from ausm_stream.pipeline.ids import STREAM_ID_PATTERN, check_stream_id
from ausm_stream.pipeline.ingest import IngestReport
from ausm_stream.pipeline.records import MAX_FRAME_INDEX, MAX_PROMPT_OBJECTS, MAX_SOURCE_SIDE
from ausm_stream.pipeline.registry import MAX_OBJECT_ID

MAX_SOURCE_CHARS = 2048
"""Longest source URL or path."""
MAX_POINTS = 256
"""Points one object may be given by."""

Coordinate = Annotated[float, Field(allow_inf_nan=False)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored


class StreamCreate(Body):
    id: Annotated[
        str,
        Field(pattern=f"^{STREAM_ID_PATTERN}$", examples=["cam-7"]),  # for the OpenAPI schema
        AfterValidator(check_stream_id),  # the rule itself
    ]
    source: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_SOURCE_CHARS,
            description="a video file path or URL (rtsp://, http://, ...) that ingest opens, "
            "or 'external' for an ingest running elsewhere (ausm-stream ingest); shown with "
            "its user:password@ redacted",
            examples=["rtsp://camera-7.local/stream"],
        ),
    ]
    fps: Annotated[
        float | None,
        Field(gt=0, le=240, description="resample to this rate (default: the source's own)"),
    ] = None


class RLEMask(Body):
    """A COCO RLE mask (``pycocotools.mask.encode(...)`` with ``counts`` as a string)."""

    size: Annotated[
        list[Annotated[int, Field(ge=1, le=MAX_SOURCE_SIDE)]],
        Field(min_length=2, max_length=2, description="[height, width] of the source frame"),
    ]
    counts: Annotated[str, Field(min_length=1)]


class PromptObject(Body):
    """One object, given by exactly one of ``mask``, ``box`` or ``points``."""

    object_id: Annotated[
        int | None,
        Field(
            ge=0,
            le=MAX_OBJECT_ID,
            description="its id in the track records' prompt_object_id (default: next)",
        ),
    ] = None
    mask: RLEMask | None = None
    box: Annotated[
        list[Coordinate] | None,
        Field(min_length=4, max_length=4, description="[x0, y0, x1, y1]"),
    ] = None
    points: Annotated[
        list[Annotated[list[Coordinate], Field(min_length=2, max_length=2)]] | None,
        Field(min_length=1, max_length=MAX_POINTS, description="[[x, y], ...] on the object"),
    ] = None

    @model_validator(mode="after")
    def one_shape(self) -> PromptObject:
        given = [k for k in ("mask", "box", "points") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of mask, box or points for an object (got {given or 'none'})"
            )
        return self


class PromptCreate(Body):
    objects: Annotated[list[PromptObject], Field(min_length=1, max_length=MAX_PROMPT_OBJECTS)]
    frame: Annotated[
        int | None,
        Field(
            ge=0,
            le=MAX_FRAME_INDEX,
            description="the frame it applies at (default: the next frame ingested)",
        ),
    ] = None


class PromptAccepted(BaseModel):
    stream_id: str
    frame: int
    """The frame the prompt applies at."""
    object_ids: list[int]


class StreamView(BaseModel):
    id: str
    source: str
    fps: float | None
    created: float
    first_frame: int
    ingest: IngestReport | None
    """Its ingest (``None`` for an ``external`` stream)."""
    segmentation: StreamStatus | None
    """What the workers report of it (``None`` before its first frame is segmented)."""


class StreamRemoved(BaseModel):
    id: str
    frames: int
    """The frames it had: its end record follows its last frame."""


class Health(BaseModel):
    status: Literal["ok", "error"]
    broker: str | None = None
    """``ok`` or what is wrong (this and the others: for callers with the token only)."""
    store: str | None = None
    workers: str | None = None
    """``ok (N running)``, or each worker whose loop is restarting, stuck or gone."""
