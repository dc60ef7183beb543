"""What a record declares, read without decompressing, is what pyarrow then reads."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ausm_stream.errors import RecordError
from ausm_stream.pipeline import ipc, records
from ausm_stream.pipeline.records import PromptRecord
from ausm_stream.pipeline.tracks import FrameTracks, encode_tracks
from tests.pipeline.test_records import chunk


def tracks_batch() -> pa.RecordBatch:
    masks = np.zeros((2, 8, 8), bool)
    masks[:, 2:4, 2:5] = True
    frame = FrameTracks(
        "cam-1", 0, 0, 0, 8, 8, np.array([1, 2]), ["circle", "ring"],
        np.ones(2, np.float32), masks, np.array([-1, 3]),
    )  # fmt: skip
    return encode_tracks([frame], "m@1")


BATCHES = {
    "frames": lambda: records.encode_frames(chunk(n=3)),
    "prompt": lambda: records.encode_prompt(
        PromptRecord("cam-1", None, [4, 9], np.ones((2, 16, 24), bool))
    ),
    "tracks": lambda: records.to_ipc(tracks_batch()),
}


@pytest.mark.parametrize("compression", ["zstd", None])
@pytest.mark.parametrize("kind", sorted(BATCHES))
def test_declared_sizes_are_the_buffers_pyarrow_reads(kind, compression):
    encoded = BATCHES[kind]()
    batch = pa.ipc.open_stream(pa.py_buffer(encoded)).read_next_batch()
    value = records.to_ipc(batch, compression)
    record = ipc.open_record(value, [batch.schema], kind, 8, {}, {"frame_idx", "prompt_object_id"})

    # pyarrow lists a column's buffers depth first, children's too, as the IPC body has them
    read = [b.size if b is not None else 0 for c in batch.columns for b in c.buffers()]
    assert [b.declared for b in record.buffers] == read
    binary = {
        f.name for f in batch.schema if pa.types.is_binary(f.type) or pa.types.is_string(f.type)
    }
    assert record.pending == binary  # no cap given: none may be read yet
    with pytest.raises(RuntimeError, match="before bounding them"):
        record.read()
    for name in binary:
        record.bound(name, 1 << 20, kind, "")
    assert record.read().equals(batch)


def test_a_body_too_short_for_its_buffers_is_refused():
    value = records.encode_frames(chunk(n=3))
    with pytest.raises(RecordError, match="not a readable Arrow IPC stream"):
        records.decode("frames", value[:-200], "cam-1")
