"""The analyst's three questions over a dataset of a million track rows: pruned vs. full scan.

    .venv/bin/python bench/query.py                    # ~3 minutes, most of it writing
    .venv/bin/python bench/query.py --keep /tmp/ds     # keep (and reuse) the dataset

The dataset is written by the worker's own Parquet sink (``tests/track_data.py``):
``--streams`` cameras, two days each, ``--frames`` frames a day (one a second from 02:00
UTC, 64-frame files as ``worker.parquet_frames`` writes them), ``--tracks`` tracks in
every frame: 20 x 2 x 5,000 x 5 = 1,000,000 rows by default.

Each question is asked for one stream-day (``stream_id`` and ``date`` filters, which prune
folders) and for the whole dataset (no such filters: every file is read):

1. which tracks of class ``circle`` were in the camera between 02:00 and 03:00;
2. how long each object stayed;
3. the masks of track 42 (decoded at the source size).

Printed: the median of ``--repeat`` runs of each, pruned over full (target: at most 0.10),
and ``export`` rows per second in each format (one stream-day).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/track_data.py

from ausm_stream.pipeline.query import TrackDataset
from ausm_stream.pipeline.storage import FileStore
from ausm_stream.pipeline.tracks import source_masks
from tests.track_data import write_tracks

DAY = "2026-12-04"


def questions(prune: str) -> dict[str, str]:
    where = f"WHERE {prune}" if prune else "WHERE true"
    return {
        "class circle, 02:00-03:00": (
            f"SELECT DISTINCT stream_id, track_id FROM tracks {where} AND label = 'circle' "
            "AND hour(capture_ts) = 2"
        ),
        "how long each stayed": (
            "SELECT stream_id, track_id, epoch(max(capture_ts)) - epoch(min(capture_ts)) "
            f"AS stay_s FROM tracks {where} GROUP BY ALL"
        ),
        "masks of track 42": (
            "SELECT frame_idx, mask_rle, mask_height, mask_width, source_height, source_width "
            f"FROM tracks {where} AND track_id = 42 ORDER BY stream_id, frame_idx"
        ),
    }


def timed(data: TrackDataset, sql: str, repeat: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        table = data.query(sql)
        if "mask_rle" in table.column_names:  # the masks themselves, not just their rows
            source_masks(table)  # (every camera here has one frame size)
        times.append(time.perf_counter() - started)
        rows = table.num_rows
    return median(times), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--frames", type=int, default=5000, help="frames per stream and day")
    parser.add_argument("--tracks", type=int, default=5, help="tracks in every frame")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the dataset here (reused if there)")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="ausm-query-"))
    store = FileStore(root)
    if not (root / "tracks").exists():
        started = time.perf_counter()
        rows = write_tracks(
            store,
            [f"cam-{i:02d}" for i in range(args.streams)],
            frames_per_day=args.frames,
            tracks=args.tracks,
            life=600,
            interval_s=1.0,
            window=64,
        )
        print(f"wrote {rows:,} track rows in {time.perf_counter() - started:.0f} s to {root}")
    with TrackDataset(store) as data:
        total = data.query("SELECT count(*) FROM tracks").column(0)[0].as_py()
        files = len(data.datasets["tracks"].files)
        print(f"dataset: {total:,} track rows in {files:,} files\n")
        pruned = questions(f"stream_id = 'cam-07' AND date = '{DAY}'")
        full = questions("")
        print(
            f"{'question':<28} {'pruned s':>9} {'rows':>7} {'full s':>8} {'rows':>8} {'ratio':>6}"
        )
        for name in pruned:
            t_p, n_p = timed(data, pruned[name], args.repeat)
            t_f, n_f = timed(data, full[name], args.repeat)
            print(f"{name:<28} {t_p:>9.3f} {n_p:>7} {t_f:>8.3f} {n_f:>8} {t_p / t_f:>6.3f}")
        print()
        for fmt in ("mot", "mots", "ytvis"):
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                report = data.export(fmt, Path(out), streams=["cam-07"], where=f"date = '{DAY}'")
                took = time.perf_counter() - started
            print(
                f"export {fmt:<6} {report.rows:>7} rows in {took:6.2f} s: "
                f"{report.rows / took:>8,.0f} rows/s"
            )


if __name__ == "__main__":
    main()
