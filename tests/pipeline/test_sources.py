"""The API's source allow-list (pipeline/sources.py) and the decoder's limits."""

from __future__ import annotations

import numpy as np
import pytest

from ausm_stream.errors import ConfigError, InvalidInputError, SourceError
from ausm_stream.pipeline import ingest
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.sources import SourcePolicy, check_source, protocol_whitelist, resolve
from ausm_stream.pipeline.video_files import write_h264

DNS = {
    "cam.example.com": ["93.184.216.34"],
    "metadata.internal": ["169.254.169.254"],
    "rebind.example.com": ["93.184.216.34", "10.0.0.7"],
    "cam-7.cameras.local": ["10.20.3.7"],
}


def policy(hosts: str | None = None, media_root: str | None = None) -> SourcePolicy:
    return PipelineConfig.from_dict(
        {"ingest": {"source_hosts": hosts, "media_root": media_root}}
    ).ingest.source_policy()


def check(source: str, p: SourcePolicy) -> None:
    check_source(source, p, resolver=lambda host: DNS.get(host, []))


def test_public_hosts_pass_and_internal_ones_are_refused():
    default = policy()
    check("rtsp://admin:pw@cam.example.com:554/stream", default)
    for source in (
        "http://metadata.internal/latest/meta-data",
        "http://169.254.169.254/latest/meta-data",  # an address is resolved like a name
        "rtsp://rebind.example.com/s",  # one private address among public ones is enough
        "rtsp://cam-7.cameras.local/s",
    ):
        with pytest.raises(InvalidInputError, match=r"ingest\.source_hosts"):
            check_source(source, default, resolver=lambda h: DNS.get(h, [h]))
    with pytest.raises(InvalidInputError, match="does not resolve"):
        check("rtsp://nowhere.invalid/s", default)


def test_listed_hosts_and_networks_may_be_private():
    check("rtsp://cam-7.cameras.local/s", policy(hosts="*.cameras.local"))
    check("rtsp://cam-7.cameras.local/s", policy(hosts="10.20.0.0/16"))
    with pytest.raises(InvalidInputError):
        check("rtsp://cam-7.cameras.local/s", policy(hosts="10.21.0.0/16, other.local"))
    # Loopback by a real lookup: refused unless listed.
    with pytest.raises(InvalidInputError, match="loopback"):
        check_source("rtsp://localhost:8554/s", policy())
    check_source("rtsp://127.0.0.1:8554/s", policy(hosts="127.0.0.1"))
    assert "127.0.0.1" in resolve("localhost")


def test_schemes_outside_the_list_are_refused():
    for source in ("file:///etc/passwd", "gopher://cam.example.com/", "concat:a|b"):
        with pytest.raises(InvalidInputError):
            check(source, policy())
    only_rtsp = PipelineConfig.from_dict({"ingest": {"source_schemes": "rtsp"}})
    with pytest.raises(InvalidInputError, match="scheme 'http' is not allowed"):
        check("http://cam.example.com/s", only_rtsp.ingest.source_policy())
    with pytest.raises(ConfigError, match="unknown scheme"):
        PipelineConfig.from_dict({"ingest": {"source_schemes": "rtsp,gopher"}})


def test_local_files_only_under_the_media_root(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    inside = media / "a.mp4"
    inside.write_bytes(b"x")
    outside = tmp_path / "b.mp4"
    outside.write_bytes(b"x")
    (media / "link.mp4").symlink_to(outside)
    with pytest.raises(InvalidInputError, match=r"ingest\.media_root"):
        check(str(inside), policy())  # no media root: no local files
    p = policy(media_root=str(media))
    check(str(inside), p)
    for source in (str(outside), str(media / "link.mp4"), f"{media}/../b.mp4"):
        with pytest.raises(InvalidInputError, match="must lie under"):
            check(source, p)
    with pytest.raises(InvalidInputError, match="does not exist"):
        check(str(media / "none.mp4"), p)


def test_ffmpeg_gets_only_the_protocols_a_scheme_needs():
    assert protocol_whitelist("/videos/a.mp4") == "file"
    assert protocol_whitelist("rtsp://cam/s") == "rtsp,rtp,udp,tcp"
    assert "file" not in protocol_whitelist("https://cam/playlist.m3u8")


def test_frames_above_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    frames = np.zeros((4, 64, 96, 3), dtype=np.uint8)
    path = write_h264(tmp_path / "v.mp4", frames, fps=8)
    assert len(list(ingest.decode_source(str(path), (32, 32)))) == 4
    monkeypatch.setattr(ingest, "MAX_SOURCE_PIXELS", 64 * 96 - 1)
    with pytest.raises(SourceError):
        list(ingest.decode_source(str(path), (32, 32)))
