"""Checkpoints of streams coming back into memory, loaded off the step loop.

A stream that left memory (paged out to the object store, or ended) comes back with its next
record, from its checkpoint. Loading that checkpoint is a store round trip and a decode: on
the loop thread it stalled every other stream (with 1,000 registered streams and 16 active,
active throughput fell from 36 to 25 frames/s, issue 29). Here each load runs on a small pool
of threads; the stream's records wait in the worker, in order, until its load is done (the
loop asks each pass), while the other streams step on.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from ausm_stream.operators.checkpoint import CheckpointStore

LOAD_THREADS = 2
"""Checkpoints loaded at once (store round trips overlap; the decode holds the GIL)."""


class PageIns:
    """Loads of checkpoints under way, one per stream."""

    def __init__(self, checkpoints: CheckpointStore, threads: int = LOAD_THREADS) -> None:
        self.checkpoints = checkpoints
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="page-in")
        self._loads: dict[str, Future] = {}

    def finished(self, stream_id: str) -> Future | None:
        """The stream's load once it is done (its result, or the store's error, is the
        future's), handed over once; ``None`` while it runs, starting it if none was."""
        load = self._loads.get(stream_id)
        if load is None:
            self._loads[stream_id] = self._pool.submit(self.checkpoints.load, stream_id)
            return None
        if not load.done():
            return None
        return self._loads.pop(stream_id)

    def forget(self, stream_id: str) -> None:
        """Drop the stream's load (its partition moved, or the run ended)."""
        load = self._loads.pop(stream_id, None)
        if load is not None:
            load.cancel()

    def clear(self) -> None:
        for stream_id in list(self._loads):
            self.forget(stream_id)
