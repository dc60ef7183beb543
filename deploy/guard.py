"""What every request to the control plane passes before the app reads a byte of its body:
the bearer token, then the body's size.

FastAPI reads and parses a body before it runs a route's dependencies, so a token checked
there came too late: a 40 MB body without a token cost the replica 192 MiB, and bad JSON
with a wrong token answered 422, not 401. :class:`RequestGuard` is plain ASGI middleware in
front of the app: a request without the token is answered 401 from its headers alone, and a
body larger than ``api.max_body_bytes`` 413, from its ``Content-Length`` when it has one,
else as soon as that many bytes have arrived.

Ray Serve's HTTP proxy, in front of the replica, reads what a client sends into its own
queue while the replica answers (it has no body limit of its own), so the bytes a client
manages to send before the answer reaches it wait there until the answer goes out (README,
"Control plane"). A body limit on the ingress in front of the API stops them earlier.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PUBLIC_PATHS = frozenset({"/healthz"})
"""Answered without the token (``/healthz`` then says only ``ok`` or ``error``)."""
QUERY_TOKEN_PATHS = frozenset({"/"})
"""Where the token may also come as ``?token=``: the live page, opened from a link (its
script then sends the header)."""
METRICS_PATH = "/metrics"
"""What ``api.metrics_token`` opens (GET only)."""
UNAUTHORIZED = "missing or wrong bearer token: send 'Authorization: Bearer <api.token>'"


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ('' for none)."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return ""


def token_matches(given: str, token: str) -> bool:
    """Compared in constant time."""
    return hmac.compare_digest(given.encode(), token.encode())


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit: FastAPI answers it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"request body larger than {limit} bytes (api.max_body_bytes); send less"
        )


class RequestGuard:
    """ASGI middleware: 401 without the token (but on ``PUBLIC_PATHS``), 413 for a body
    over ``max_body_bytes``, both before the app reads the body."""

    def __init__(
        self, app: ASGIApp, token: str, max_body_bytes: int, metrics_token: str | None = None
    ) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.metrics_token = metrics_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["path"] not in PUBLIC_PATHS and not self._authorized(scope, headers):
            await _answer(scope, receive, send, HTTPException(401, UNAUTHORIZED))
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _answer(scope, receive, send, BodyTooLarge(self.max_body_bytes))
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # read by something other than FastAPI's body parsing
            if started:
                raise
            await _answer(scope, receive, send, exc)

    def _authorized(self, scope: Scope, headers: Headers) -> bool:
        given = bearer(headers.get("authorization"))
        if not given and scope["path"] in QUERY_TOKEN_PATHS:
            query = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
            given = (query.get("token") or [""])[0]
        if token_matches(given, self.token):
            return True
        # The metrics token reads the metrics, and nothing else.
        return (
            self.metrics_token is not None
            and scope["path"] == METRICS_PATH
            and scope["method"] in ("GET", "HEAD")
            and token_matches(given, self.metrics_token)
        )


async def _answer(scope: Scope, receive: Receive, send: Send, exc: HTTPException) -> None:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    response = JSONResponse({"detail": exc.detail}, exc.status_code, headers=headers)
    await response(scope, receive, send)
