"""SQL over the mask tracks: DuckDB views on the Parquet dataset, local or on S3/MinIO.

Views (every timestamp is UTC; the connection's time zone is UTC):

- ``tracks``: one row per (frame, track), :data:`~.tracks.TRACKS_SCHEMA` plus the partition
  columns ``stream_id`` and ``date``.
- ``frames``: one row per processed frame (:data:`~.tracks.FRAMES_TABLE_SCHEMA`).
- ``track_summary``: one row per track (stream, track id): its class, first and last frame
  and capture time, ``duration_s`` (last capture time less the first), the frames it was
  seen in, mean score, mean area (source pixels), whether it was prompted, and
  ``box_path``, its boxes in frame order (``frame_idx``, ``x0``, ``y0``, ``x1``, ``y1``).
  ``label`` is the class of its last row: the tracker sums a track's class evidence over
  its frames, so the latest label is its verdict on all of them.
- ``tracks_by_class(bucket)``: a table macro, tracks per stream, time bucket and class (the
  track's class, as in ``track_summary``, so each track counts once per bucket):
  ``SELECT * FROM tracks_by_class(INTERVAL 1 HOUR)``.

DuckDB reads the pyarrow datasets of :func:`~.dataset.open_dataset`, registered in the
connection, and hands its filters and column lists to them: a filter on ``stream_id`` or
``date`` prunes whole folders, on a local directory or on S3 alike. (DuckDB's own ``httpfs``
extension is not used: it is downloaded at run time, which offline machines cannot do.)
Capture times do not prune folders: add ``date = '...'`` to a time-range query to read one
day's folders only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ausm_stream.errors import InvalidInputError, NotFoundError
from ausm_stream.pipeline.dataset import open_dataset
from ausm_stream.pipeline.exports import ExportReport, Format, VideoInfo, class_ids, write_export
from ausm_stream.pipeline.ids import check_stream_id
from ausm_stream.pipeline.storage import ObjectStore
from ausm_stream.pipeline.tracks import MASK_COLUMNS, source_masks

VIEWS = ("tracks", "frames", "track_summary", "tracks_by_class")

_SUMMARY = """
CREATE VIEW track_summary AS
SELECT
    stream_id,
    track_id,
    arg_max(label, frame_idx) AS label,
    min(frame_idx) AS first_frame,
    max(frame_idx) AS last_frame,
    min(capture_ts) AS first_seen,
    max(capture_ts) AS last_seen,
    epoch(max(capture_ts)) - epoch(min(capture_ts)) AS duration_s,
    count(*) AS frames,
    avg(score) AS mean_score,
    avg(area) AS mean_area,
    bool_or(prompted) AS prompted,
    list({'frame_idx': frame_idx, 'x0': bbox.x0, 'y0': bbox.y0,
          'x1': bbox.x1, 'y1': bbox.y1} ORDER BY frame_idx) AS box_path
FROM tracks
GROUP BY stream_id, track_id
"""

_BY_CLASS = """
CREATE MACRO tracks_by_class(bucket) AS TABLE
SELECT
    t.stream_id,
    time_bucket(bucket, t.capture_ts) AS bucket_start,
    s.label,
    count(DISTINCT t.track_id) AS tracks,
    count(*) AS detections
FROM tracks t JOIN track_summary s USING (stream_id, track_id)
GROUP BY ALL
ORDER BY t.stream_id, bucket_start, s.label
"""


@dataclass(frozen=True)
class TrackMasks:
    """One track's masks at its source frame size."""

    stream_id: str
    track_id: int
    frame_idx: np.ndarray  # (n,) int64, ascending
    masks: np.ndarray  # (n, H, W) bool


class TrackDataset:
    """The output of a pipeline as SQL views (module docstring), in one DuckDB connection.

    >>> data = TrackDataset(open_store(StorageConfig(url="file://./ausm-data")))
    >>> data.query("SELECT * FROM track_summary WHERE stream_id = ?", ["cam-7"])
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.datasets = {name: open_dataset(store, name) for name in ("tracks", "frames")}
        for name, dataset in self.datasets.items():
            self.con.register(name, dataset)
        self.con.execute(_SUMMARY)
        self.con.execute(_BY_CLASS)

    def query(self, sql: str, params: list | dict | None = None) -> pa.Table:
        """The result of one SQL statement as an Arrow table; ``?`` or ``$name`` parameters
        come from ``params``. A statement DuckDB refuses raises :class:`InvalidInputError`
        with DuckDB's reason."""
        try:
            return self.con.sql(sql, params=params).to_arrow_table()
        except duckdb.Error as exc:
            raise InvalidInputError(f"query failed: {exc}") from None

    def track_masks(self, stream_id: str, track_id: int) -> TrackMasks:
        """A track's masks decoded and scaled to its source frame size, in frame order."""
        rows = self.query(
            f"SELECT {', '.join(MASK_COLUMNS)} FROM tracks "
            "WHERE stream_id = ? AND track_id = ? ORDER BY frame_idx",
            [stream_id, track_id],
        )
        if rows.num_rows == 0:
            raise NotFoundError(f"stream {stream_id!r} has no track {track_id} in the dataset")
        frame_idx, masks = source_masks(rows)
        return TrackMasks(stream_id, track_id, frame_idx, masks)

    def export(
        self,
        fmt: Format,
        out: Path,
        streams: Sequence[str] | None = None,
        where: str | None = None,
        class_pairs: Sequence[str] = (),
        ground_truth: bool = False,
    ) -> ExportReport:
        """Write the tracks of ``streams`` (default: every stream with tracks), optionally
        filtered by a SQL condition on the ``tracks`` view (``where``, e.g. ``date =
        '2026-12-04' AND label = 'circle'``), in ``fmt`` (:mod:`.exports`) under ``out``. A
        stream's video (YouTube-VIS) spans the frames from its first selected row to its
        last."""
        cond = f" AND ({where})" if where else ""
        if streams is None:
            found = self.query(f"SELECT DISTINCT stream_id FROM tracks WHERE true{cond}")
            streams = sorted(found.column("stream_id").to_pylist())
        for sid in streams:  # before any file is written (a folder's name is URL-decoded)
            check_stream_id(sid)
        labels = self.query(
            f"SELECT DISTINCT label FROM tracks WHERE list_contains(?, stream_id){cond}",
            [list(streams)],
        )
        ids = class_ids(labels.column("label").to_pylist(), class_pairs)

        def videos() -> Iterator[tuple[VideoInfo, pa.Table]]:
            for number, sid in enumerate(streams, start=1):
                rows = self.query(f"SELECT * FROM tracks WHERE stream_id = ?{cond}", [sid])
                if rows.num_rows == 0:
                    raise NotFoundError(f"stream {sid!r} has no track rows in the dataset{cond}")
                frames = pc.min_max(rows["frame_idx"]).as_py()
                first, length = frames["min"], frames["max"] - frames["min"] + 1
                h, w = rows["source_height"][0].as_py(), rows["source_width"][0].as_py()
                yield VideoInfo(number, sid, first, length, h, w), rows

        return write_export(videos(), fmt, out, ids, ground_truth)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> TrackDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
