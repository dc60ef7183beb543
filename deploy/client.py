"""``ausm-stream streams ...``: the control plane's API from a terminal.

``--url`` (default ``$AUSM_API_URL`` or ``http://127.0.0.1:8000``) and ``--token`` (default
``$AUSM_API__TOKEN``, the variable that also sets ``api.token`` for the server)::

    ausm-stream streams add cam-7 rtsp://camera-7.local/stream --fps 8
    ausm-stream streams list
    ausm-stream streams show cam-7
    ausm-stream streams prompt cam-7 --box 40,30,120,110
    ausm-stream streams rm cam-7
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from typing import Any

from ausm_stream.errors import AUSMStreamError
from ausm_stream.pipeline.ids import stream_id_argument

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(AUSMStreamError):
    """The API answered with an error (its status and reason are in the message)."""


def request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {args.token or ''}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail")
        except ValueError:
            detail = exc.reason
        raise ApiError(f"{method} {path}: {exc.code} {detail}") from None
    except urllib.error.URLError as exc:
        reason = f"cannot reach the API at {args.url} ({exc.reason}); is it running?"
        raise ApiError(reason) from None


def _pairs(text: str, n: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise ApiError(f"{what} {text!r}: give {n} comma-separated numbers")
    return values


def _add(args: argparse.Namespace) -> int:
    body = {"id": args.id, "source": args.source}
    if args.fps is not None:
        body["fps"] = args.fps
    view = request(args, "POST", "/streams", body)
    print(f"added {view['id']} ({view['source']})")
    return 0


def _list(args: argparse.Namespace) -> int:
    streams = request(args, "GET", "/streams")
    print(
        f"{'stream':<16} {'ingest':<13} {'ingested':>9} {'segmented':>10} {'lag':>5} "
        f"{'fps':>6} {'tracks':>7} {'worker':<10}"
    )
    for s in streams:
        seg, ing = s["segmentation"] or {}, s["ingest"]
        ingested = ing["produced"] - s["first_frame"] if ing else seg.get("frames_in", 0)
        print(
            f"{s['id']:<16} {ing['state'] if ing else 'external':<13} {ingested:>9} "
            f"{seg.get('frames_out', 0):>10} {seg.get('lag_frames', 0):>5} "
            f"{seg.get('fps', 0.0):>6.1f} {seg.get('tracks', 0):>7} {seg.get('worker') or '-':<10}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(request(args, "GET", f"/streams/{args.id}"), indent=2))
    return 0


def _rm(args: argparse.Namespace) -> int:
    removed = request(args, "DELETE", f"/streams/{args.id}")
    print(f"removed {removed['id']} after {removed['frames']} frames")
    return 0


def _prompt(args: argparse.Namespace) -> int:
    obj: dict[str, Any] = {}
    if args.object_id is not None:
        obj["object_id"] = args.object_id
    if args.box:
        obj["box"] = _pairs(args.box, 4, "--box")
    else:
        obj["points"] = [_pairs(p, 2, "--point") for p in args.point]
    body: dict[str, Any] = {"objects": [obj]}
    if args.frame is not None:
        body["frame"] = args.frame
    done = request(args, "POST", f"/streams/{args.id}/prompts", body)
    print(f"object {done['object_ids'][0]} of {done['stream_id']} applies at frame {done['frame']}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    streams = sub.add_parser("streams", help="add, list, show, prompt or remove streams (API)")
    streams.add_argument("--url", default=os.environ.get("AUSM_API_URL", DEFAULT_URL))
    streams.add_argument("--token", default=os.environ.get("AUSM_API__TOKEN"))
    streams.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    verbs = streams.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="register a stream and start its ingest")
    add.add_argument("id", type=stream_id_argument)
    add.add_argument("source", help="file path, URL, or 'external'")
    add.add_argument("--fps", type=float, default=None)
    add.set_defaults(func=_add)
    verbs.add_parser("list", help="every stream with its counters").set_defaults(func=_list)
    show = verbs.add_parser("show", help="one stream, as JSON")
    show.add_argument("id", type=stream_id_argument)
    show.set_defaults(func=_show)
    rm = verbs.add_parser("rm", help="end a stream and unregister it")
    rm.add_argument("id", type=stream_id_argument)
    rm.set_defaults(func=_rm)
    pr = verbs.add_parser("prompt", help="track one object (source pixels)")
    pr.add_argument("id", type=stream_id_argument)
    shape = pr.add_mutually_exclusive_group(required=True)
    shape.add_argument("--box", metavar="X0,Y0,X1,Y1")
    shape.add_argument("--point", metavar="X,Y", action="append", help="repeatable")
    pr.add_argument("--frame", type=int, default=None, help="default: the next frame")
    pr.add_argument("--object-id", type=int, default=None)
    pr.set_defaults(func=_prompt)
