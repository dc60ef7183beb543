"""The API's guard (deploy/guard.py) in front of a small app: which token opens what."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from ausm_stream.deploy.guard import RequestGuard

TOKEN, METRICS = "api-token-1", "metrics-token-2"


class Client:
    """Calls an ASGI app in this process (no server, no HTTP library): the status only."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, target: str, headers: dict[str, str] | None = None) -> int:
        path, _, query = target.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        asyncio.run(self.app(scope, receive, send))
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    def get(self, target: str, headers: dict[str, str] | None = None) -> int:
        return self.request("GET", target, headers)

    def post(self, target: str, headers: dict[str, str] | None = None) -> int:
        return self.request("POST", target, headers)


def client() -> Client:
    app = FastAPI()
    app.add_middleware(RequestGuard, token=TOKEN, max_body_bytes=1024, metrics_token=METRICS)

    @app.get("/metrics")
    def metrics() -> str:
        return "ausm_frames_total 1"

    @app.get("/streams")
    def streams() -> list:
        return []

    @app.post("/streams")
    def add() -> dict:
        return {}

    @app.get("/")
    def page() -> str:
        return "page"

    return Client(app)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_metrics_token_reads_the_metrics_and_nothing_else():
    c = client()
    assert c.get("/metrics", auth(METRICS)) == 200
    assert c.get("/metrics", auth(TOKEN)) == 200
    assert c.get("/streams", auth(METRICS)) == 401
    assert c.post("/streams", auth(METRICS)) == 401
    assert c.get(f"/?token={METRICS}") == 401
    assert c.get(f"/?token={TOKEN}") == 200
    assert c.get("/metrics") == 401
    assert c.get("/metrics", auth("other")) == 401
