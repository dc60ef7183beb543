"""A live camera stand-in: H.264 in MPEG-TS over HTTP on loopback, encoded in real time.

Run as ``python tests/live_source.py PORT FPS``; every GET gets an endless stream, encoded
by PyAV's FFmpeg (libx264) straight into the socket at FPS frames a second, until the
process is killed: exactly what a dropped IP camera looks like to ingest.
"""

from __future__ import annotations

import contextlib
import sys
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, HTTPServer

import av
import numpy as np


def frame(i: int, size: int = 64) -> np.ndarray:
    img = np.full((size, size, 3), 40, dtype=np.uint8)
    x = 8 + (i * 3) % (size - 24)
    img[20:36, x : x + 16] = (220, 60, 60)
    return img


class LiveStream(BaseHTTPRequestHandler):
    fps = 10

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        with contextlib.suppress(OSError, av.FFmpegError):  # the client went away
            self._stream()

    def _stream(self) -> None:
        with av.open(self.wfile, mode="w", format="mpegts") as out:
            stream = out.add_stream("libx264", rate=Fraction(self.fps))
            stream.width = stream.height = 64
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
            t0 = time.monotonic()
            i = 0
            while True:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame(i), format="rgb24")):
                    out.mux(packet)
                self.wfile.flush()
                i += 1
                time.sleep(max(0.0, t0 + i / self.fps - time.monotonic()))

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    LiveStream.fps = int(sys.argv[2])
    HTTPServer(("127.0.0.1", int(sys.argv[1])), LiveStream).serve_forever()


if __name__ == "__main__":
    main()
