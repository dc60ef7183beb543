"""``ausm-stream query | export | render``: the analyst's commands over the Parquet dataset.

Each reads the dataset of ``--config`` (its ``storage`` section, with the usual
``AUSM_STORAGE__*`` environment overrides) or of ``--store`` (a folder, ``file:///path`` or
``s3://bucket/prefix``; for S3, the endpoint and keys come from the configuration or from
``AUSM_STORAGE__ENDPOINT``, ``AUSM_STORAGE__ACCESS_KEY`` and ``AUSM_STORAGE__SECRET_KEY``).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ausm_stream.errors import InvalidInputError
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.exports import FORMATS
from ausm_stream.pipeline.ids import stream_id_argument
from ausm_stream.pipeline.query import VIEWS, TrackDataset
from ausm_stream.pipeline.storage import open_store

TABLE_ROWS = 40
"""``--format table`` prints at most this many rows (as DuckDB's shell does)."""
CELL_WIDTH = 40


def open_data(args: argparse.Namespace) -> TrackDataset:
    cfg = PipelineConfig.load(args.config)
    if args.store:
        url = args.store if "://" in args.store else f"file://{Path(args.store).resolve()}"
        cfg = dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, url=url))
    return TrackDataset(open_store(cfg.storage))


def _plain(value: Any) -> Any:
    """A cell as JSON or CSV can hold it: RLE bytes as text, times as ISO 8601."""
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _flat(table: pa.Table) -> pa.Table:
    """Nested and binary columns as text, which CSV can hold."""
    columns = []
    for name in table.column_names:
        col = table.column(name)
        kind = col.type
        if pa.types.is_nested(kind) or pa.types.is_binary(kind):
            values = [_plain(v) for v in col.to_pylist()]
            text = [v if isinstance(v, str) or v is None else json.dumps(v) for v in values]
            col = pa.array(text, pa.utf8())
        columns.append(col)
    return pa.table(columns, names=table.column_names)


def _iso_times(table: pa.Table) -> pa.Table:
    """Timestamp columns as ISO 8601 text, written by Arrow: a capture time has nanoseconds,
    which Python's datetime cannot hold (``to_pylist`` refuses them)."""
    columns = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type):
            zone = "%z" if col.type.tz is not None else ""
            col = pc.strftime(col, format=f"%Y-%m-%dT%H:%M:%S{zone}")
        columns.append(col)
    return pa.table(columns, names=table.column_names)


def _cell(value: Any) -> str:
    text = "NULL" if value is None else str(_plain(value))
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def format_table(table: pa.Table) -> str:
    """The first :data:`TABLE_ROWS` rows, aligned: numbers to the right, the rest left."""
    shown = _iso_times(table.slice(0, TABLE_ROWS))
    rows = [[_cell(v) for v in r.values()] for r in shown.to_pylist()]
    names = table.column_names
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) for t in table.schema.types]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    lines = [line(names), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
    shown = f", {TABLE_ROWS} shown (--format csv for all)" if table.num_rows > TABLE_ROWS else ""
    lines.append(f"({table.num_rows} rows{shown})")
    return "\n".join(lines)


def write_result(table: pa.Table, fmt: str, output: Path | None) -> None:
    if fmt == "parquet":
        if output is None:
            raise InvalidInputError("--format parquet needs --output FILE")
        pq.write_table(table, output, compression="zstd")
        return
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(_flat(table), buf)
        text = buf.getvalue().decode()
    elif fmt == "json":  # JSON Lines: one object per row, any size streams
        text = "".join(json.dumps(_plain(r)) + "\n" for r in _iso_times(table).to_pylist())
    else:
        text = format_table(table) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def _query(args: argparse.Namespace) -> int:
    with open_data(args) as data:
        table = data.query(args.sql)
    write_result(table, args.format, args.output)
    return 0


def _export(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    with open_data(args) as data:
        report = data.export(
            args.format,
            args.out,
            streams=args.stream or None,
            where=args.where,
            class_pairs=args.class_id,
        )
    took = time.perf_counter() - started
    print(
        f"wrote {report.rows} track rows as {args.format} to {args.out} in {took:.1f} s "
        f"({report.rows / max(took, 1e-9):.0f} rows/s): {', '.join(p.name for p in report.files)}"
    )
    if report.hidden:
        print(
            f"left out {report.hidden} rows whose masks lie wholly under higher-scoring ones "
            "(MOTS allows no overlapping masks)"
        )
    return 0


def _render(args: argparse.Namespace) -> int:
    from ausm_stream.deploy.render import render

    frames = None
    if args.frames:
        first, sep, last = args.frames.partition(":")
        if not sep or not first.isdigit() or not last.isdigit() or int(first) > int(last):
            raise InvalidInputError(f"--frames {args.frames!r}: write FIRST:LAST, e.g. 0:63")
        frames = (int(first), int(last))
    with open_data(args) as data:
        report = render(
            data, args.stream, args.video, args.out, frames, sheet_frames=args.sheet_frames
        )
    print(f"rendered {report.frames} frames of {args.stream} to {report.path}")
    return 0


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="pipeline YAML whose storage section names the dataset")
    p.add_argument("--store", help="the dataset's store: a folder, file:///path or s3://b/prefix")


def add_parser(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "query",
        help="SQL over the mask tracks (DuckDB)",
        description=f"Run one SQL statement over the views {', '.join(VIEWS)} "
        "(pipeline/query.py). Filters on stream_id and date read only those folders.",
    )
    q.add_argument("sql", help="e.g. \"SELECT * FROM track_summary WHERE stream_id = 'cam-7'\"")
    _source_options(q)
    q.add_argument(
        "--format",
        default="table",
        choices=["table", "csv", "json", "parquet"],
        help="table (the first rows), csv, json (one object per line) or parquet",
    )
    q.add_argument("--output", type=Path, help="write here instead of standard output")
    q.set_defaults(func=_query)

    ex = sub.add_parser("export", help="tracks as YouTube-VIS JSON, MOTS or MOT files")
    ex.add_argument("--format", required=True, choices=FORMATS)
    ex.add_argument("--out", required=True, type=Path, help="folder to write into")
    _source_options(ex)
    ex.add_argument(
        "--stream",
        action="append",
        default=[],
        type=stream_id_argument,
        help="only this stream (repeatable)",
    )
    ex.add_argument("--where", help="SQL condition on the tracks, e.g. \"date = '2026-12-04'\"")
    ex.add_argument(
        "--class-id",
        action="append",
        default=[],
        metavar="LABEL=ID",
        help="class id of a label (repeatable; *=ID for all others; default: labels sorted, "
        "from 1)",
    )
    ex.set_defaults(func=_export)

    r = sub.add_parser("render", help="draw a stream's tracks over its video (MP4 or PNG)")
    r.add_argument("--stream", required=True, type=stream_id_argument)
    r.add_argument("--video", required=True, type=Path, help="the stream's source video file")
    r.add_argument("--out", required=True, type=Path, help="an .mp4, or a .png contact sheet")
    _source_options(r)
    r.add_argument("--frames", metavar="FIRST:LAST", help="only these frames (inclusive)")
    r.add_argument("--sheet-frames", type=int, default=8, help="frames on a contact sheet")
    r.set_defaults(func=_render)
