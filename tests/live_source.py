"""A live camera stand-in: the ffmpeg program serving H.264 in MPEG-TS over HTTP on loopback.

ffmpeg (the static build shipped in the ``imageio-ffmpeg`` wheel, a dev dependency) encodes
its test pattern in real time (``-re``) and serves it as an HTTP server (``-listen 1``) to
one client, until the process is killed: exactly what a dropped IP camera looks like to
ingest. Killing it and starting another on the same port is the camera coming back.
"""

from __future__ import annotations

import subprocess

import imageio_ffmpeg


def serve_camera(port: int, fps: int = 10, size: int = 64) -> subprocess.Popen:
    """Start the camera; its URL is ``http://127.0.0.1:<port>/live.ts``."""
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        *("-hide_banner", "-loglevel", "error", "-nostdin", "-re"),
        *("-f", "lavfi", "-i", f"testsrc2=size={size}x{size}:rate={fps}"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(fps)),
        *("-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}/live.ts"),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
