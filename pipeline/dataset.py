"""The Parquet dataset the worker writes, as readers open it.

Layout (hive-partitioned, readable by DuckDB, Polars, Spark, pandas)::

    tracks/stream_id=<id>/date=<yyyy-mm-dd>/part-<first>-<last>.parquet   one row per track
    frames/stream_id=<id>/date=<yyyy-mm-dd>/part-<first>-<last>.parquet   one row per frame

Partition columns (``stream_id``, ``date``) are in the path only, as hive readers expect;
``date`` is the UTC date of the first frame of the file's window (:mod:`.sinks`). A file
covers one window of ``worker.parquet_frames`` frames and is named by its frame range, so a
replay rewrites the same file.

:func:`open_dataset` gives a ``pyarrow.dataset.Dataset`` with the schema stated, not
inferred: opening one reads no file, and a filter on ``stream_id`` or ``date`` skips every
file outside those folders (partition pruning), on a local directory as on S3.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.dataset as ds

from ausm_stream.pipeline.storage import ObjectStore
from ausm_stream.pipeline.tracks import FRAMES_TABLE_SCHEMA, TRACKS_SCHEMA

Table = Literal["tracks", "frames"]
PARTITIONS = pa.schema([("stream_id", pa.utf8()), ("date", pa.date32())])
"""The hive partition columns, outermost first."""


def stored_schema(table: Table) -> pa.Schema:
    """A table's schema as readers see it: the file columns, then the partition columns."""
    schema = {"tracks": TRACKS_SCHEMA, "frames": FRAMES_TABLE_SCHEMA}[table]
    files = schema.remove(schema.get_field_index("stream_id"))
    return pa.schema([*files, *PARTITIONS])


def open_dataset(store: ObjectStore, table: Table = "tracks") -> ds.Dataset:
    """The ``tracks`` or ``frames`` dataset of ``store`` (empty when nothing is written yet)."""
    fs, base = store.arrow_fs()
    root = f"{base}/{table}"
    schema = stored_schema(table)
    if fs.get_file_info(root).type == pa.fs.FileType.NotFound:
        return ds.dataset(schema.empty_table())
    return ds.dataset(
        root,
        schema=schema,
        filesystem=fs,
        format="parquet",
        partitioning=ds.partitioning(PARTITIONS, flavor="hive"),
    )


def read_dataset(store: ObjectStore, table: Table = "tracks") -> pa.Table:
    """The whole ``tracks`` or ``frames`` dataset as one table (for tests, demos, small jobs)."""
    return open_dataset(store, table).to_table()
