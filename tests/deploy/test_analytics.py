"""The analyst's commands: ``query`` in every output format, ``export``, and ``render``
drawing a stream's tracks over its video in each track's own colour."""

from __future__ import annotations

import csv
import io
import json

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ausm_stream.deploy.cli import main
from ausm_stream.deploy.overlay import PALETTE, track_colour
from ausm_stream.model import load_model
from ausm_stream.model.data.synthetic import ShapesSpec, generate_video
from ausm_stream.operators.processor import StreamProcessor
from ausm_stream.pipeline.ingest import decode_source
from ausm_stream.pipeline.query import TrackDataset
from ausm_stream.pipeline.records import FrameChunk
from ausm_stream.pipeline.sinks import ParquetSink, TrackSinks
from ausm_stream.pipeline.storage import FileStore
from ausm_stream.pipeline.video_files import write_h264
from tests.track_data import write_tracks

SOURCE = (144, 256)  # 16:9, letterboxed by ingest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("analytics")
    rows = write_tracks(FileStore(root), ["cam-1", "cam-2"])
    return root, rows


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_query_prints_and_writes_every_format(dataset, capsys, tmp_path):
    root, rows = dataset
    sql = "SELECT stream_id, track_id, label, bbox, mask_rle, capture_ts FROM tracks"
    code, out, _ = run(capsys, "query", sql, "--store", str(root), "--format", "csv")
    assert code == 0
    got = list(csv.DictReader(io.StringIO(out)))
    assert len(got) == rows and set(got[0]) == {
        "stream_id",
        "track_id",
        "label",
        "bbox",
        "mask_rle",
        "capture_ts",
    }
    assert json.loads(got[0]["bbox"]).keys() == {"x0", "y0", "x1", "y1"}
    code, out, _ = run(capsys, "query", sql + " LIMIT 5", "--store", str(root), "--format", "json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 5 and lines[0]["capture_ts"].startswith("2026-12-0")
    target = tmp_path / "summary.parquet"
    code, _, _ = run(
        capsys,
        "query",
        "SELECT * FROM track_summary",
        "--store",
        f"file://{root}",
        "--format",
        "parquet",
        "--output",
        str(target),
    )
    with TrackDataset(FileStore(root)) as data:
        want = data.query("SELECT count(*) AS n FROM track_summary").column("n")[0].as_py()
    assert code == 0 and pq.read_table(target).num_rows == want
    code, out, _ = run(capsys, "query", "SELECT * FROM tracks", "--store", str(root))
    assert code == 0 and out.splitlines()[0].startswith("frame_idx")
    assert f"({rows} rows, 40 shown" in out and len(out.splitlines()) == 40 + 3


def test_capture_times_print_to_the_nanosecond(tmp_path, capsys):
    """Capture times have nanoseconds (a camera's clock, ingest's time.time_ns), which
    Python's datetime cannot hold: table and JSON output print them whole."""
    write_tracks(FileStore(tmp_path), ["cam-9"], days=1, frames_per_day=3, interval_s=0.125000001)
    sql = "SELECT frame_idx, capture_ts FROM frames ORDER BY frame_idx"
    code, out, _ = run(capsys, "query", sql, "--store", str(tmp_path))
    assert code == 0 and "T02:00:00.250000002+0000" in out
    code, out, _ = run(capsys, "query", sql, "--store", str(tmp_path), "--format", "json")
    times = [json.loads(line)["capture_ts"] for line in out.splitlines()]
    assert code == 0 and times[1:] == [
        "2026-12-03T02:00:00.125000001+0000",
        "2026-12-03T02:00:00.250000002+0000",
    ]


def test_query_errors_say_what_is_wrong(dataset, capsys):
    root, _ = dataset
    code, _, err = run(capsys, "query", "SELECT nope FROM tracks", "--store", str(root))
    assert code == 2 and "query failed" in err and "nope" in err
    code, _, err = run(capsys, "query", "SELECT 1", "--store", str(root), "--format", "parquet")
    assert code == 2 and "--output" in err


def test_export_writes_one_file_per_stream(dataset, capsys, tmp_path):
    root, rows = dataset
    code, out, _ = run(
        capsys, "export", "--format", "mot", "--out", str(tmp_path), "--store", str(root),
        "--where", "date = '2026-12-04'",
    )  # fmt: skip
    assert code == 0 and f"wrote {rows // 2} track rows" in out
    lines = (tmp_path / "cam-2.txt").read_text().splitlines()
    assert len(lines) == rows // 4 and lines[0].count(",") == 9
    assert min(int(line.split(",")[0]) for line in lines) == 48 + 1  # day 2, frames from 1


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """A 16:9 video ingested (decoded, letterboxed, stamped) as ingest does, segmented by
    the shipped model, written by the real sink."""
    root = tmp_path_factory.mktemp("render")
    spec = ShapesSpec(size=SOURCE, frames=12, min_radius=16, max_radius=40, occlusion_prob=0)
    video = write_h264(root / "cam.mp4", generate_video("test", 7, spec).frames, fps=8)
    decoded = list(decode_source(str(video), (128, 128)))
    model, version = load_model("default")
    store = FileStore(root / "store")
    sinks = TrackSinks(version, parquet=ParquetSink(store, version, 8))
    processor = StreamProcessor(model, sinks.add)
    pts = np.array([int((d.pts_s - decoded[0].pts_s) * 1e9) for d in decoded])
    n = len(decoded)
    processor.on_record(
        FrameChunk(
            "cam",
            np.arange(n),
            pts,
            pts + 1_764_900_000 * 10**9,
            *SOURCE,
            np.stack([d.rgb for d in decoded]),
            decoded[0].placement.content,
        )
    )
    processor.drain()
    sinks.end("cam")
    return root, video, n


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_render_draws_each_track_in_its_colour(segmented, capsys):
    root, video, n = segmented
    store = str(root / "store")
    code, out, _ = run(
        capsys, "render", "--stream", "cam", "--video", str(video), "--out",
        str(root / "cam.png"), "--store", store, "--sheet-frames", "1",
    )  # fmt: skip
    assert code == 0 and "rendered 1 frames" in out
    sheet = np.asarray(Image.open(root / "cam.png").convert("RGB")).astype(float)
    source = _frames(video)[0].astype(float)
    assert sheet.shape == source.shape
    with TrackDataset(FileStore(store)) as data:
        ids = data.query("SELECT track_id FROM tracks WHERE frame_idx = 0").column(0).to_pylist()
        assert ids
        for track_id in ids:
            track = data.track_masks("cam", track_id)
            mask = track.masks[0].copy()
            mask[:16] = False  # leave out the rows where labels are written
            want = 0.45 * source + 0.55 * track_colour(track_id)
            close = np.abs(sheet[mask] - want[mask]).max(axis=1) <= 1.0
            assert close.mean() > 0.9, (track_id, close.mean())

    code, out, _ = run(
        capsys, "render", "--stream", "cam", "--video", str(video), "--out",
        str(root / "cam.mp4"), "--store", store,
    )  # fmt: skip
    rendered = _frames(root / "cam.mp4")
    assert code == 0 and len(rendered) == n and rendered[0].shape == (*SOURCE, 3)
    # the video is the painted frames (H.264 keeps them within a few levels)
    assert np.abs(rendered[0].astype(float) - sheet).mean() < 4.0


def test_render_refuses_what_it_cannot_draw(segmented, capsys):
    root, video, _ = segmented
    store = str(root / "store")
    code, _, err = run(
        capsys, "render", "--stream", "nope", "--video", str(video), "--out",
        str(root / "x.mp4"), "--store", store,
    )  # fmt: skip
    assert code == 2 and "'nope' has no frames" in err
    code, _, err = run(
        capsys, "render", "--stream", "cam", "--video", str(video), "--out",
        str(root / "x.gif"), "--store", store,
    )  # fmt: skip
    assert code == 2 and ".mp4 or a .png" in err


def test_track_ids_never_share_a_colour():
    colours = [tuple(track_colour(i).round(3).tolist()) for i in range(1000)]
    assert len(set(colours)) == len(colours)
    assert colours[:12] == [tuple(c) for c in PALETTE.round(3).tolist()]
    assert all(0 <= v <= 255 for c in colours for v in c)
