"""Where each stream's model state lives between its steps: many streams, few resident.

Most of a stream's memory is its state (``ausm-stream info``), so residency, not compute,
bounds how many streams one worker serves (MODEL.md section 8). States live in three tiers:

1. **resident**: live tensors on the model's device, at most ``resident`` of them
   (``worker.resident_streams``; unset = all). A batch only steps resident states, so a
   batch holds at most that many streams.
2. **host**: beyond that, the state's own serialisation (:meth:`StreamState.to_bytes`),
   zstd-compressed, in host memory, within ``host_bytes`` in all
   (``worker.host_state_bytes``; unset = no limit).
3. **stored**: beyond the host budget, the stream's checkpoint in the object store. This
   class only names the streams to move there (:meth:`StateResidency.over_budget`); the
   worker checkpoints them, lets them go and pages them back in at their next record, the
   same way as streams idle for ``worker.idle_page_out_s``.

The least recently stepped state goes down a tier first. A stream whose frames are already
queued is paged in ahead of its turn, on a helper thread while the current batch steps
(:meth:`StateResidency.prefetch`). Paging is exact: a state's bytes hold every bit of it, so
outputs are bit-identical to a run where every state stays resident (tested). The state's
dtype (``worker.state_dtype``) is applied by every step, paged or not, for the same reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import torch

from ausm_stream.model import AUSMConfig, StreamState

log = logging.getLogger(__name__)

Tier = Literal["resident", "host", "stored"]
ZSTD_LEVEL = 1
"""zstd's fastest level: the float state compresses little more at higher levels (measured
in ``bench/streams.py``), and paging sits on the step path."""


@dataclass
class PagingStats:
    page_outs: int = 0
    page_ins: int = 0
    prefetched: int = 0
    """Page-ins that were ready (or in flight) when their stream's turn came."""
    out_seconds: float = 0.0
    in_seconds: float = 0.0
    raw_bytes: int = 0
    """Serialised size of the states now in the host tier, before compression."""


class StateResidency:
    """The states of a worker's streams, in the resident and host tiers (see module doc)."""

    def __init__(
        self,
        cfg: AUSMConfig,
        device: torch.device,
        resident: int | None = None,
        host_bytes: int | None = None,
    ) -> None:
        if resident is not None and resident < 1:
            raise ValueError("resident must be at least 1")
        self.cfg = cfg
        self.device = device
        self.resident_limit = resident
        self.host_limit = host_bytes
        self._resident: dict[str, StreamState] = {}  # least recently stepped first
        self._host: dict[str, bytes] = {}  # least recently stepped first
        self._raw: dict[str, int] = {}
        self._inflight: dict[str, Future[StreamState]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._codec = pa.Codec("zstd", compression_level=ZSTD_LEVEL)
        self.host_bytes = 0
        self.stats = PagingStats()

    # -- membership ---------------------------------------------------------------------------
    def __contains__(self, stream_id: str) -> bool:
        return stream_id in self._resident or stream_id in self._host

    def tier(self, stream_id: str) -> Tier:
        if stream_id in self._resident:
            return "resident"
        return "host" if stream_id in self._host else "stored"

    @property
    def resident_count(self) -> int:
        return len(self._resident)

    @property
    def host_count(self) -> int:
        return len(self._host)

    def put(self, stream_id: str, state: StreamState) -> None:
        """A new or restored stream's state: resident, as the most recently used."""
        self.drop(stream_id)
        self._make_room(1, keep=())
        self._resident[stream_id] = state

    def drop(self, stream_id: str) -> None:
        """Forget a stream's state, whichever tier holds it."""
        self._resident.pop(stream_id, None)
        self._inflight.pop(stream_id, None)
        blob = self._host.pop(stream_id, None)
        if blob is not None:
            self.host_bytes -= len(blob)
            self.stats.raw_bytes -= self._raw.pop(stream_id)

    # -- access ---------------------------------------------------------------------------------
    def batch(self, stream_ids: list[str]) -> list[StreamState]:
        """The states of a batch about to step, all resident and marked most recently used;
        others go to the host tier to make room."""
        if self.resident_limit is not None and len(stream_ids) > self.resident_limit:
            raise ValueError(
                f"a batch of {len(stream_ids)} streams exceeds {self.resident_limit} resident"
            )
        self._make_room(sum(sid not in self._resident for sid in stream_ids), keep=stream_ids)
        states = []
        for sid in stream_ids:
            state = self._resident.pop(sid, None)
            if state is None:
                state = self._page_in(sid)
            self._resident[sid] = state
            states.append(state)
        return states

    def get(self, stream_id: str) -> StreamState:
        """One stream's state for reading or a small change (a prompt), made resident."""
        return self.batch([stream_id])[0]

    def copy(self, stream_id: str) -> StreamState:
        """A copy of the state, leaving every tier as it is (for a snapshot)."""
        if stream_id in self._resident:
            return self._resident[stream_id].clone()
        return self._decode(self._host[stream_id], self._raw[stream_id])

    def prefetch(self, stream_ids: list[str]) -> None:
        """Start decoding the host-tier states of the next batch on the helper thread; each
        becomes resident (making room then) when its batch steps."""
        wanted = [sid for sid in stream_ids if sid in self._host and sid not in self._inflight]
        if not wanted:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="page-in")
        for sid in wanted:
            self._inflight[sid] = self._pool.submit(self._decode, self._host[sid], self._raw[sid])

    def over_budget(self, movable: set[str], leaving: Collection[str] = ()) -> list[str]:
        """Host-tier streams to move to the object store, least recently stepped first, so
        that the host tier fits its budget once they and ``leaving`` (already on their way)
        are gone. Only ``movable`` ones (the worker's: nothing queued, so their checkpoint
        holds all of them) are named."""
        if self.host_limit is None:
            return []
        gone = sum(len(self._host[sid]) for sid in leaving if sid in self._host)
        excess = self.host_bytes - gone - self.host_limit
        out = []
        for sid, blob in self._host.items():
            if excess <= 0:
                break
            if sid in movable and sid not in self._inflight:
                out.append(sid)
                excess -= len(blob)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- paging ---------------------------------------------------------------------------------
    def _make_room(self, coming: int, keep: Collection[str]) -> None:
        """Page out the least recently used resident states (never those in ``keep``) so
        that ``coming`` more fit within the limit: there are never more than that many."""
        if self.resident_limit is None:
            return
        while len(self._resident) + coming > self.resident_limit:
            victim = next(sid for sid in self._resident if sid not in keep)
            self._page_out(victim, self._resident.pop(victim))

    def _page_out(self, stream_id: str, state: StreamState) -> None:
        started = time.perf_counter()
        raw = state.to_bytes()
        blob = self._codec.compress(raw, asbytes=True)
        self._host[stream_id] = blob
        self._raw[stream_id] = len(raw)
        self.host_bytes += len(blob)
        self.stats.raw_bytes += len(raw)
        self.stats.page_outs += 1
        self.stats.out_seconds += time.perf_counter() - started

    def _page_in(self, stream_id: str) -> StreamState:
        started = time.perf_counter()
        future = self._inflight.pop(stream_id, None)
        if future is not None:
            state = future.result()
            self.stats.prefetched += 1
        else:
            state = self._decode(self._host[stream_id], self._raw[stream_id])
        blob = self._host.pop(stream_id)
        self.host_bytes -= len(blob)
        self.stats.raw_bytes -= self._raw.pop(stream_id)
        self.stats.page_ins += 1
        self.stats.in_seconds += time.perf_counter() - started
        return state

    def _decode(self, blob: bytes, raw_size: int) -> StreamState:
        raw = self._codec.decompress(blob, decompressed_size=raw_size, asbytes=True)
        return StreamState.from_bytes(raw, self.cfg, self.device)
