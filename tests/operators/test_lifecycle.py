"""A worker's book of streams: one record per stream, forgotten in one call, previews handed
over once each, ended streams' stats bounded."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ausm_stream.operators import lifecycle
from ausm_stream.operators.lifecycle import StreamBook
from ausm_stream.operators.status import Preview


def preview(sid: str, frame: int) -> Preview:
    return Preview(sid, frame, np.zeros((4, 4, 3), np.uint8), pa.record_batch({"x": [frame]}))


def test_reading_stats_records_nothing_and_forget_drops_every_piece():
    book = StreamBook(preview_streams=4)
    assert book.stats("ghost").frames == 0 and "ghost" not in book.records
    book.record("a").stats.frames = 5
    book.active("a", now=1.0)
    book.keep_preview(preview("a", 4))
    book.due.add("a")
    book.to_store.add("a")
    book.leaving.add("a")
    book.waiting["a"] = []
    book.forget("a")
    assert "a" not in book.records and "a" not in book.previews and "a" not in book.waiting
    assert not (book.due | book.progressed | book.to_store | book.leaving)
    assert book.unsent_previews() == []  # a forgotten stream's preview is not handed over


def test_previews_are_handed_over_once_newest_only_and_bounded():
    book = StreamBook(preview_streams=2)
    book.keep_preview(preview("a", 1))
    book.keep_preview(preview("a", 2))
    book.keep_preview(preview("b", 1))
    sent = {p.stream_id: p.frame_idx for p in book.unsent_previews()}
    assert sent == {"a": 2, "b": 1} and book.unsent_previews() == []
    book.keep_preview(preview("c", 7))  # "a", least recently stepped, makes room
    assert list(book.previews) == ["b", "c"]
    assert [p.stream_id for p in book.unsent_previews()] == ["c"]
    book.new_life("b")  # added again after it ended: its old frame is not its preview
    assert "b" not in book.previews
    assert StreamBook(preview_streams=0).previews == {}


def test_streams_leaving_memory_keep_their_stats_and_the_oldest_ended_go(monkeypatch):
    monkeypatch.setattr(lifecycle, "ENDED_STATS_KEPT", 2)
    book = StreamBook(preview_streams=0)
    for sid in ("a", "b", "c"):
        book.record(sid).stats.frames = 3
        book.left_memory(sid, ended=True)
    assert set(book.records) == {"b", "c"}  # "a", the oldest ended, went
    book.record("d")
    book.left_memory("d", ended=False)
    assert book.records["d"].place == "stored" and book.stored_count() == 1
    book.paged_in("d")
    assert book.records["d"].place == "memory" and book.stored_count() == 0
    rec = book.restored("b", resume_offset=40, now=2.0)
    assert (rec.place, rec.resume_offset, rec.stats.frames) == ("memory", 40, 3)
