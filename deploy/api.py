"""The control plane's REST API: FastAPI routes served by Ray Serve.

Routes (README, "Control plane"): ``POST /streams``, ``GET /streams``, ``GET /streams/{id}``,
``DELETE /streams/{id}``, ``POST /streams/{id}/prompts``, ``GET /streams/{id}/preview.png``,
``GET /metrics`` (Prometheus), ``GET /healthz`` (no auth), ``GET /`` (the live page) and the
OpenAPI schema at ``/openapi.json``; no ``/docs`` or ``/redoc`` pages (their scripts could
not send the token).

Every path but ``/healthz`` needs ``Authorization: Bearer <api.token>``, checked with the
body's size before the body is read (:mod:`.guard`); the live page also takes ``?token=`` so
that a person can open its URL (its script then sends the header). Errors are JSON
``{"detail": ...}`` saying what is wrong: 401 for a missing or wrong token, 404 for an
unknown stream, 409 for a clash (an id taken, a frame already ingested), 413 for a body over
``api.max_body_bytes``, 422 for a malformed body or a prompt that does not fit the stream.
``/healthz`` tells anyone ``ok`` or ``error``, and callers with the token which part.
Sources are shown with their credentials redacted (``rtsp://***@camera/...``).

The app holds no state of its own: streams are the stream manager's
(:mod:`ausm_stream.operators.streams`) and status the workers', so replicas are
interchangeable.
"""

from __future__ import annotations

import io
from importlib import resources
from typing import Annotated, Literal

import numpy as np
import ray
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
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
from ausm_stream.deploy.guard import RequestGuard, bearer, token_matches
from ausm_stream.deploy.metrics import render_metrics
from ausm_stream.deploy.overlay import COLUMNS, paint
from ausm_stream.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from ausm_stream.model.prompts import box_masks, point_masks
from ausm_stream.operators.calls import brief, result
from ausm_stream.operators.coordinator import coordinator_name
from ausm_stream.operators.pool import WorkerPool
from ausm_stream.operators.status import StreamStatus
from ausm_stream.operators.streams import StreamInfo, manager_name
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.geometry import Placement
from ausm_stream.pipeline.ingest import redact_credentials

STATUS_OF = {NotFoundError: 404, ConflictError: 409, InvalidInputError: 422}


class Backend:
    """The app's view of a running pipeline: the stream manager and the workers' pool."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.manager = ray.get_actor(manager_name(cfg))
        self.pool = WorkerPool(cfg, ray.get_actor(coordinator_name(cfg)))

    def health(self) -> dict[str, str]:
        """``ok`` or what is wrong, for the broker, the store and the workers (their
        heartbeats): one call to the stream manager and one to the coordinator."""
        try:
            parts = result(self.manager.health.remote(), timeout=10)
        except ray.exceptions.RayError as exc:
            parts = {"broker": f"unknown: {brief(exc)}", "store": f"unknown: {brief(exc)}"}
        try:
            workers = self.pool.health()
        except ray.exceptions.RayError as exc:
            parts["workers"] = f"unknown: {brief(exc)}"
            return parts
        wrong = [f"{name}: {state}" for name, state in sorted(workers.items()) if state != "ok"]
        if not workers:
            parts["workers"] = "error: no workers"
        elif wrong:
            parts["workers"] = "error: " + "; ".join(wrong)
        else:
            parts["workers"] = f"ok ({len(workers)} running)"
        return parts

    def view(self, info: StreamInfo, segmentation: StreamStatus | None) -> StreamView:
        s = info.stream
        return StreamView(
            id=s.id,
            source=redact_credentials(s.source),
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
            return box_masks([geometry.box(obj.box)], geometry.model)[0]
        return point_masks([geometry.points(obj.points or [])], geometry.model)[0]

    masks = []
    for i, obj in enumerate(body.objects):
        try:
            masks.append(one(obj))
        except InvalidInputError as exc:
            raise InvalidInputError(f"objects[{i}]: {exc}") from None
    return np.stack(masks)


def build_app(
    backend: Backend, token: str, max_body_bytes: int, metrics_token: str | None = None
) -> FastAPI:
    app = FastAPI(
        title="ausm-stream control plane",
        description="Add, remove, inspect and prompt video streams segmented by AUSM.",
        version="1",
        docs_url=None,  # pages whose scripts fetch /openapi.json without the token
        redoc_url=None,
    )
    app.add_middleware(
        RequestGuard, token=token, max_body_bytes=max_body_bytes, metrics_token=metrics_token
    )

    @app.exception_handler(InvalidInputError)
    def invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        code = next(c for cls, c in STATUS_OF.items() if isinstance(exc, cls))
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(RequestValidationError)
    def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        """Where and what, without echoing the input: it may be large, hold credentials, or
        be a NaN that JSON cannot carry (FastAPI's own answer was then a 500)."""
        errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz", response_model=Health, response_model_exclude_none=True)
    def healthz(
        probe: Annotated[Literal["ready", "live"], Query()] = "ready",
        authorization: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """Whether the broker and the object store answer and every worker's loop runs (its
        heartbeat is fresh): 200 ``{"status": "ok"}``, or 503 ``{"status": "error"}``. No
        token needed; with it, the answer also says which part is wrong and how. ``?probe=live``
        asks only whether the API itself answers (a liveness probe: a broker outage must not
        restart the API's pods)."""
        if probe == "live":
            return JSONResponse({"status": "ok"})
        parts = backend.health()
        ok = all(v == "ok" or v.startswith("ok ") for v in parts.values())
        body = {"status": "ok" if ok else "error"}
        if token_matches(bearer(authorization), token):
            body.update(parts)
        return JSONResponse(Health(**body).model_dump(exclude_none=True), 200 if ok else 503)

    @app.post("/streams", status_code=201, response_model=StreamView)
    def add_stream(body: StreamCreate) -> StreamView:
        """Register a stream and start its ingest (409 if the id exists)."""
        info = result(backend.manager.add.remote(body.id, body.source, body.fps))
        return backend.view(info, backend.pool.stream_status(body.id))

    @app.get("/streams", response_model=list[StreamView])
    def list_streams() -> list[StreamView]:
        infos = result(backend.manager.list.remote())
        status = backend.pool.status()
        return [backend.view(i, status.streams.get(i.stream.id)) for i in infos]

    @app.get("/streams/{stream_id}", response_model=StreamView)
    def get_stream(stream_id: str) -> StreamView:
        """Frames ingested and segmented, lag, fps, tracks, last checkpoint, worker, ingest."""
        info = result(backend.manager.describe.remote(stream_id))
        return backend.view(info, backend.pool.stream_status(stream_id))

    @app.delete("/streams/{stream_id}", response_model=StreamRemoved)
    def remove_stream(stream_id: str) -> StreamRemoved:
        """Stop its ingest and end the stream: its last rows are written, its state released."""
        frames = result(backend.manager.remove.remote(stream_id))
        return StreamRemoved(id=stream_id, frames=frames)

    @app.post(
        "/streams/{stream_id}/prompts",
        status_code=202,
        response_model=PromptAccepted,
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

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """Prometheus text exposition."""
        infos = result(backend.manager.list.remote())
        text, content_type = render_metrics(backend.pool.status(), infos)
        return Response(text, media_type=content_type)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        """The live page: one row per stream with its counters and preview (the token as a
        header or as ``?token=``)."""
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
        api = self.backend.cfg.api
        return build_app(self.backend, self.token, api.max_body_bytes, api.metrics_token)

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
