"""The control plane's REST API: FastAPI routes served by Ray Serve.

Routes (README, "Control plane"): ``POST /streams``, ``GET /streams``, ``GET /streams/{id}``,
``DELETE /streams/{id}``, ``POST /streams/{id}/prompts``, ``GET /streams/{id}/preview.png``,
``GET /metrics`` (Prometheus), ``GET /healthz`` (no auth), ``GET /`` (the live page) and the
OpenAPI schema at ``/openapi.json``.

Every route but ``/healthz`` needs ``Authorization: Bearer <api.token>``, compared in
constant time; the live page also takes ``?token=`` so that a person can open its URL (its
script then sends the header). Errors are JSON ``{"detail": ...}`` saying what is wrong:
401 for a missing or wrong token, 404 for an unknown stream, 409 for a clash (an id taken,
a frame already ingested), 422 for a malformed body or a prompt that does not fit the stream.

The app holds no state of its own: streams are the stream manager's
(:mod:`ausm_stream.operators.streams`) and status the workers', so replicas are
interchangeable.
"""

from __future__ import annotations

import hmac
import io
from importlib import resources
from typing import Annotated, Literal

import numpy as np
import ray
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from ausm_stream import rle
from ausm_stream.deploy.api_models import (
    Health,
    PromptAccepted,
    PromptCreate,
    PromptObject,
    StreamCreate,
    StreamRemoved,
    StreamView,
)
from ausm_stream.deploy.metrics import render_metrics
from ausm_stream.deploy.overlay import COLUMNS, paint
from ausm_stream.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from ausm_stream.model.prompts import box_masks, point_masks
from ausm_stream.operators.calls import result
from ausm_stream.operators.coordinator import coordinator_name
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.operators.status import StreamStatus
from ausm_stream.operators.streams import StreamInfo, manager_name
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.geometry import Placement

STATUS_OF = {NotFoundError: 404, ConflictError: 409, InvalidInputError: 422}


class Backend:
    """The app's view of a running pipeline: the stream manager and the workers' pool."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.manager = ray.get_actor(manager_name(cfg))
        self.pool = WorkerPool(cfg, ray.get_actor(coordinator_name(cfg)))

    def view(self, info: StreamInfo, segmentation: StreamStatus | None) -> StreamView:
        s = info.stream
        return StreamView(
            id=s.id,
            source=s.source,
            fps=s.fps,
            created=s.created,
            first_frame=s.first_frame,
            ingest=info.ingest,
            segmentation=segmentation,
        )


def _masks(body: PromptCreate, geometry: Placement) -> np.ndarray:
    def one(obj: PromptObject) -> np.ndarray:
        if obj.mask is not None:
            h, w = obj.mask.size
            geometry.check_mask_size(h, w)  # before decoding: the size is the caller's word
            try:
                decoded = rle.decode(obj.mask.counts.encode(), h, w)
            except ValueError as exc:  # InvalidInputError included
                raise InvalidInputError(f"mask: {exc}") from None
            return geometry.mask(decoded)
        if obj.box is not None:
            return box_masks([geometry.box(obj.box)], geometry.model)[0].numpy()
        return point_masks([geometry.points(obj.points or [])], geometry.model)[0].numpy()

    masks = []
    for i, obj in enumerate(body.objects):
        try:
            masks.append(one(obj))
        except InvalidInputError as exc:
            raise InvalidInputError(f"objects[{i}]: {exc}") from None
    return np.stack(masks)


def build_app(backend: Backend, token: str) -> FastAPI:
    app = FastAPI(
        title="ausm-stream control plane",
        description="Add, remove, inspect and prompt video streams segmented by AUSM.",
        version="1",
    )

    def authorized(
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        given = ""
        if authorization and authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                "missing or wrong bearer token: send 'Authorization: Bearer <api.token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    auth = [Depends(authorized)]

    @app.exception_handler(InvalidInputError)
    def invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        code = next(c for cls, c in STATUS_OF.items() if isinstance(exc, cls))
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.get("/healthz", response_model=Health)
    def healthz(
        probe: Annotated[Literal["ready", "live"], Query()] = "ready",
    ) -> JSONResponse:
        """Whether the broker, the object store and the workers answer (no auth): 200, or
        503 naming the part that does not. ``?probe=live`` asks only whether the API itself
        answers (a liveness probe: a broker outage must not restart the API's pods)."""
        if probe == "live":
            return JSONResponse({"ok": True, "broker": "-", "store": "-", "workers": "-"})
        try:
            parts = result(backend.manager.health.remote(), timeout=10)
        except ray.exceptions.RayError as exc:
            parts = {"broker": f"unknown: {exc}", "store": f"unknown: {exc}"}
        try:
            workers = backend.pool.status().workers
            parts["workers"] = f"ok ({len(workers)} answering)" if workers else "none answering"
        except ray.exceptions.RayError as exc:
            parts["workers"] = f"error: {exc}"
        ok = all(v.startswith("ok") for v in parts.values())
        body = Health(ok=ok, **parts)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.post("/streams", status_code=201, response_model=StreamView, dependencies=auth)
    def add_stream(body: StreamCreate) -> StreamView:
        """Register a stream and start its ingest (409 if the id exists)."""
        info = result(backend.manager.add.remote(body.id, body.source, body.fps))
        return backend.view(info, backend.pool.stream_status(body.id))

    @app.get("/streams", response_model=list[StreamView], dependencies=auth)
    def list_streams() -> list[StreamView]:
        infos = result(backend.manager.list.remote())
        status = backend.pool.status()
        return [backend.view(i, status.streams.get(i.stream.id)) for i in infos]

    @app.get("/streams/{stream_id}", response_model=StreamView, dependencies=auth)
    def get_stream(stream_id: str) -> StreamView:
        """Frames ingested and segmented, lag, fps, tracks, last checkpoint, worker, ingest."""
        info = result(backend.manager.describe.remote(stream_id))
        return backend.view(info, backend.pool.stream_status(stream_id))

    @app.delete("/streams/{stream_id}", response_model=StreamRemoved, dependencies=auth)
    def remove_stream(stream_id: str) -> StreamRemoved:
        """Stop its ingest and end the stream: its last rows are written, its state released."""
        frames = result(backend.manager.remove.remote(stream_id))
        return StreamRemoved(id=stream_id, frames=frames)

    @app.post(
        "/streams/{stream_id}/prompts",
        status_code=202,
        response_model=PromptAccepted,
        dependencies=auth,
    )
    def prompt(stream_id: str, body: PromptCreate) -> PromptAccepted:
        """Track these objects from the next frame (or ``frame``); the answer says which."""
        masks = _masks(body, result(backend.manager.placement.remote(stream_id)))
        ids = [o.object_id for o in body.objects]
        done = result(backend.manager.prompt.remote(stream_id, masks, ids, body.frame))
        return PromptAccepted(
            stream_id=done.stream_id, frame=done.frame, object_ids=done.object_ids
        )

    @app.get(
        "/streams/{stream_id}/preview.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
        dependencies=auth,
    )
    def preview(stream_id: str) -> Response:
        """Its latest segmented frame with masks, ids and classes painted on."""
        result(backend.manager.describe.remote(stream_id))  # 404 for an unknown stream
        shown = backend.pool.preview(stream_id)
        if shown is None:
            raise NotFoundError(f"stream {stream_id!r} has no segmented frame in memory yet")
        rows = shown.rows.select(COLUMNS).to_pylist()
        buf = io.BytesIO()
        paint(shown.image, rows).save(buf, "PNG")
        return Response(
            buf.getvalue(),
            media_type="image/png",
            headers={"X-Frame-Index": str(shown.frame_idx), "Cache-Control": "no-store"},
        )

    @app.get("/metrics", response_class=Response, dependencies=auth)
    def metrics() -> Response:
        """Prometheus text exposition."""
        infos = result(backend.manager.list.remote())
        text, content_type = render_metrics(backend.pool.status(), infos)
        return Response(text, media_type=content_type)

    @app.get("/", response_class=HTMLResponse)
    def page(
        token_query: Annotated[str | None, Query(alias="token")] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> HTMLResponse:
        """The live page: one row per stream with its counters and preview."""
        if token_query is not None:
            authorization = f"Bearer {token_query}"
        authorized(authorization)
        return HTMLResponse(resources.files("ausm_stream.deploy").joinpath("page.html").read_text())

    return app


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress()
class ControlPlaneApp:
    """The Serve deployment: each replica builds the app over the running pipeline."""

    def __init__(self, cfg: PipelineConfig, token: str) -> None:
        self.backend = Backend(cfg)
        self.token = token

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_app(self.backend, self.token)

    def check_health(self) -> None:
        """Serve's periodic check: a replica whose stream manager or coordinator died (their
        owner restarted, and new ones took the names) fails it, and Serve replaces it with
        one that looks them up again. A slow answer is not a failure."""
        try:
            ray.get(
                [
                    self.backend.manager.restored_streams.remote(),
                    self.backend.pool.coordinator.current_assignment.remote(),
                ],
                timeout=30,
            )
        except ray.exceptions.GetTimeoutError:
            return
        except ray.exceptions.RayActorError as exc:
            raise RuntimeError(f"the pipeline's actors are gone: {exc}") from exc
