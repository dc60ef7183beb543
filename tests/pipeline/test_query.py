"""The analyst's side: SQL views over a dataset written by the real sink, on a local
directory and on S3, checked against the same computation done with pyarrow."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pycocotools import mask as mask_utils

from ausm_stream.errors import InvalidInputError, NotFoundError
from ausm_stream.pipeline.dataset import read_dataset
from ausm_stream.pipeline.exports import VideoInfo, write_export
from ausm_stream.pipeline.query import TrackDataset
from ausm_stream.pipeline.storage import FileStore, open_store
from tests.conftest import s3_storage
from tests.track_data import SOURCE, write_tracks

STREAMS = ["cam-1", "cam-2", "cam-7"]


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> tuple[FileStore, int]:
    store = FileStore(tmp_path_factory.mktemp("dataset"))
    return store, write_tracks(store, STREAMS)


def expected_rows(table: pa.Table, stream: str, day: str) -> pa.Table:
    keep = (pc.field("stream_id") == stream) & (pc.field("date") == dt.date.fromisoformat(day))
    return table.filter(keep)


def test_a_pruned_query_reads_only_its_folders(local, tmp_path):
    store, rows = local
    everything = read_dataset(store)
    assert everything.num_rows == rows
    with TrackDataset(store) as data:
        got = data.query(
            "SELECT frame_idx, track_id FROM tracks WHERE stream_id = ? AND date = ? "
            "ORDER BY frame_idx, track_id",
            ["cam-7", "2026-12-04"],
        )
    want = expected_rows(everything, "cam-7", "2026-12-04").sort_by(
        [("frame_idx", "ascending"), ("track_id", "ascending")]
    )
    assert got.num_rows == want.num_rows == 48 * 3
    assert got.column("frame_idx").to_pylist() == want.column("frame_idx").to_pylist()
    assert got.column("track_id").to_pylist() == want.column("track_id").to_pylist()

    # Pruning, shown: a copy with every file of the other folders damaged still answers the
    # pruned query, while a full scan fails on the damage.
    copy = tmp_path / "damaged"
    shutil.copytree(store.root, copy)
    for part in (copy / "tracks").rglob("*.parquet"):
        if "stream_id=cam-7/date=2026-12-04" not in part.as_posix():
            part.write_bytes(b"not parquet")
    with TrackDataset(FileStore(copy)) as data:
        pruned = data.query(
            "SELECT count(*) AS n FROM tracks WHERE stream_id = 'cam-7' AND date = '2026-12-04'"
        )
        assert pruned.column("n").to_pylist() == [48 * 3]
        with pytest.raises(InvalidInputError, match="query failed"):
            data.query("SELECT count(*) FROM tracks")


def test_track_summary_matches_the_rows(local):
    store, _ = local
    table = read_dataset(store).to_pylist()
    with TrackDataset(store) as data:
        summary = data.query("SELECT * FROM track_summary WHERE stream_id = 'cam-2'").to_pylist()
    by_track: dict[int, list[dict]] = {}
    for r in table:
        if r["stream_id"] == "cam-2":
            by_track.setdefault(r["track_id"], []).append(r)
    assert sorted(s["track_id"] for s in summary) == sorted(by_track)
    assert any(len({r["label"] for r in rows}) > 1 for rows in by_track.values())
    for s in summary:
        rows = sorted(by_track[s["track_id"]], key=lambda r: r["frame_idx"])
        assert s["label"] == rows[-1]["label"]  # the tracker's verdict, at its last frame
        assert (s["first_frame"], s["last_frame"]) == (rows[0]["frame_idx"], rows[-1]["frame_idx"])
        assert (s["first_seen"], s["last_seen"]) == (rows[0]["capture_ts"], rows[-1]["capture_ts"])
        span = (rows[-1]["capture_ts"] - rows[0]["capture_ts"]).total_seconds()
        assert s["duration_s"] == pytest.approx(span)
        assert s["frames"] == len(rows)
        assert s["mean_score"] == pytest.approx(np.mean([r["score"] for r in rows]))
        assert s["mean_area"] == pytest.approx(np.mean([r["area"] for r in rows]))
        assert s["prompted"] == (s["track_id"] == 1)
        path = [(b["frame_idx"], b["x0"], b["y1"]) for b in s["box_path"]]
        assert path == [(r["frame_idx"], r["bbox"]["x0"], r["bbox"]["y1"]) for r in rows]


def test_tracks_by_class_per_hour(local):
    store, _ = local
    table = read_dataset(store).to_pylist()
    with TrackDataset(store) as data:
        got = data.query("SELECT * FROM tracks_by_class(INTERVAL 1 HOUR)").to_pylist()
    last: dict[tuple, dict] = {}
    for r in sorted(table, key=lambda r: r["frame_idx"]):
        last[(r["stream_id"], r["track_id"])] = r  # a track's class: its last row's
    want: dict[tuple, set] = {}
    for r in table:
        hour = r["capture_ts"].replace(minute=0, second=0, microsecond=0)
        label = last[(r["stream_id"], r["track_id"])]["label"]
        want.setdefault((r["stream_id"], hour, label), set()).add(r["track_id"])
    assert {(g["stream_id"], g["bucket_start"], g["label"]): g["tracks"] for g in got} == {
        k: len(v) for k, v in want.items()
    }


def test_masks_decode_to_their_frame_size(local):
    store, _ = local
    table = read_dataset(store)
    for r in table.select(["mask_rle", "mask_height", "mask_width"]).to_pylist():
        rle = {"size": [r["mask_height"], r["mask_width"]], "counts": r["mask_rle"]}
        decoded = mask_utils.decode(rle)  # pycocotools reads every mask
        assert decoded.shape == (r["mask_height"], r["mask_width"]) and decoded.any()
    with TrackDataset(store) as data:
        track = data.track_masks("cam-1", 5)
        rows = data.query(
            "SELECT frame_idx, area, bbox FROM tracks WHERE stream_id = 'cam-1' AND track_id = 5 "
            "ORDER BY frame_idx"
        ).to_pylist()
        with pytest.raises(NotFoundError, match="no track 999"):
            data.track_masks("cam-1", 999)
    assert track.masks.shape == (len(rows), *SOURCE)
    assert track.frame_idx.tolist() == [r["frame_idx"] for r in rows]
    for mask, r in zip(track.masks, rows, strict=True):
        ys, xs = mask.nonzero()  # scaled to the source: where the row's box and area say
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(
            r["bbox"][k] for k in ("x0", "y0", "x1", "y1")
        )
        assert mask.sum() == r["area"]


def test_polars_and_duckdb_read_the_dataset_directly(local):
    store, rows = local
    root = Path(store.root) / "tracks"
    lazy = pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True)
    per_stream = lazy.group_by("stream_id").agg(pl.len()).collect().sort("stream_id")
    assert per_stream["len"].to_list() == [rows // 3] * 3
    n = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true) "
        "WHERE stream_id = 'cam-2'"
    ).fetchall()[0][0]
    assert n == rows // 3


def test_bad_sql_says_why(local):
    store, _ = local
    with TrackDataset(store) as data, pytest.raises(InvalidInputError, match="no_such_column"):
        data.query("SELECT no_such_column FROM tracks")


def test_the_same_on_s3(local, s3_endpoint, monkeypatch, capsys):
    from minio import Minio

    from ausm_stream.deploy.cli import main

    cfg = s3_storage(s3_endpoint, f"query-{uuid.uuid4().hex[:8]}")
    Minio(s3_endpoint.removeprefix("http://"), "test", "test-secret", secure=False).make_bucket(
        cfg.url.split("/")[2]
    )
    s3 = open_store(cfg)
    write_tracks(s3, STREAMS)
    sql = "SELECT * FROM track_summary ORDER BY stream_id, track_id"
    with TrackDataset(local[0]) as a, TrackDataset(s3) as b:
        assert b.query(sql).equals(a.query(sql))
        assert b.query(
            "SELECT count(*) AS n FROM tracks WHERE stream_id = 'cam-1' AND date = '2026-12-03'"
        ).column("n").to_pylist() == [48 * 3]
        local_masks, s3_masks = a.track_masks("cam-2", 3), b.track_masks("cam-2", 3)
    assert np.array_equal(s3_masks.masks, local_masks.masks) and s3_masks.masks.any()
    assert s3_masks.masks.shape[1:] == SOURCE

    # The command line on S3 (credentials from the environment, as in a deployment).
    for key, value in [("endpoint", s3_endpoint), ("access_key", "test")]:
        monkeypatch.setenv(f"AUSM_STORAGE__{key.upper()}", value)
    monkeypatch.setenv("AUSM_STORAGE__SECRET_KEY", "test-secret")
    count = "SELECT count(*) AS n FROM tracks WHERE stream_id = 'cam-7' AND date = '2026-12-04'"
    assert main(["query", count, "--store", cfg.url, "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ['"n"', str(48 * 3)]

    # Pruning on S3, shown as on a folder: with every object of the other folders damaged,
    # the pruned query still answers and a full scan fails.
    for key in s3.list("tracks/"):
        if key.endswith(".parquet") and "stream_id=cam-7/date=2026-12-04" not in key:
            s3.put(key, b"not parquet")
    with TrackDataset(s3) as b:
        assert b.query(count).column("n").to_pylist() == [48 * 3]
        with pytest.raises(InvalidInputError, match="query failed"):
            b.query("SELECT count(*) FROM tracks")
    write_tracks(s3, STREAMS)  # undamaged again, for Polars below
    bucket_path = cfg.url.removeprefix("s3://")
    lazy = pl.scan_parquet(
        f"s3://{bucket_path}/tracks/**/*.parquet",
        hive_partitioning=True,
        storage_options={
            "aws_endpoint_url": s3_endpoint,
            "aws_allow_http": "true",
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test-secret",
            "aws_region": "us-east-1",
        },
    )
    assert lazy.select(pl.len()).collect().item() == local[1]


@pytest.mark.parametrize("folder", ["..%2F..%2Fescaped", "x%2Fy", "a%0A"])
def test_an_export_refuses_a_stream_whose_id_would_name_another_path(local, tmp_path, folder):
    """Hive readers URL-decode partition folders: ``stream_id=..%2F..%2Fescaped`` is stream
    ``../../escaped``, which an export would write outside its folder."""
    store, _ = local
    copy = tmp_path / "store"
    shutil.copytree(
        store.root / "tracks" / "stream_id=cam-1", copy / "tracks" / f"stream_id={folder}"
    )
    out = tmp_path / "a" / "b" / "out"
    with TrackDataset(FileStore(copy)) as data:
        for fmt in ("mots", "mot", "ytvis"):
            with pytest.raises(InvalidInputError, match=r"stream id .*: use 1-128"):
                data.export(fmt, out)
    assert not (tmp_path / "escaped.txt").exists() and not list(tmp_path.rglob("*.txt"))
    with pytest.raises(InvalidInputError, match=r"stream id '\.\./x'"):
        write_export([(VideoInfo(1, "../x", 0, 1, 4, 4), pa.table({}))], "mot", out, {})
