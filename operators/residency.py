"""Where each stream's model state lives between its steps: many streams, few resident.

Most of a stream's memory is its state (``ausm-stream info``), so residency, not compute,
bounds how many streams one worker serves (MODEL.md section 8). States live in three tiers:

1. **resident**: live tensors on the model's device, at most ``resident`` of them
   (``worker.resident_streams``; unset = all). A batch only steps resident states, so a
   batch holds at most that many streams.
2. **host**: beyond that, the bytes of the state's tensors, zstd-compressed, in host
   memory, within ``host_bytes`` in all (``worker.host_state_bytes``; unset = no limit).
   Not the checkpoint format (:meth:`StreamState.to_bytes`): its checksum and bit-packing
   guard bytes that travel and rest in storage, and cost more than the compression here
   (4.4 ms against 3.2 ms per state of the tiny preset, measured).
3. **stored**: beyond the host budget, the stream's checkpoint in the object store. This
   class only names the streams to move there (:meth:`StateResidency.over_budget`); the
   worker checkpoints them, lets them go and pages them back in at their next record, the
   same way as streams idle for ``worker.idle_page_out_s``.

The least recently stepped state goes down a tier first. A stream whose frames are already
queued is paged in ahead of its turn, on a helper thread while the current batch steps
(:meth:`StateResidency.prefetch`). Paging is exact: the tensors' bytes hold every bit of them,
so outputs are bit-identical to a run where every state stays resident (tested). The state's
dtype (``worker.state_dtype``) is applied by every step, paged or not, for the same reason.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import torch

from ausm_stream.model import AUSMConfig, StreamState

Tier = Literal["resident", "host", "stored"]
ZSTD_LEVEL = 1
"""Paging sits on the step path: level 1 shrank a state that had seen 8 frames to 0.81 of
its bytes in 3.2 ms, level -1 to 0.86 in 1.6 ms (tiny preset, float32, a one-off run)."""


@dataclass(frozen=True)
class PagedState:
    """A state in the host tier: its tensors' bytes, compressed, and what rebuilds it."""

    blob: bytes
    raw_size: int
    layout: tuple[tuple[str, torch.dtype, tuple[int, ...]], ...]
    fields: dict[str, object]
    """The state's other fields (architecture, counters)."""


def pack(state: StreamState, codec: pa.Codec) -> PagedState:
    tensors = state.tensors()
    raw = b"".join(
        t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        for t in tensors.values()
    )
    layout = tuple((name, t.dtype, tuple(t.shape)) for name, t in tensors.items())
    fields = {
        f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name not in tensors
    }
    return PagedState(codec.compress(raw, asbytes=True), len(raw), layout, fields)


def unpack(paged: PagedState, codec: pa.Codec, device: torch.device) -> StreamState:
    raw = codec.decompress(paged.blob, decompressed_size=paged.raw_size, asbytes=True)
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8)  # one copy, then views
    tensors, at = {}, 0
    for name, dtype, shape in paged.layout:
        t = torch.empty(shape, dtype=dtype)
        n = t.numel() * t.element_size()
        t.view(-1).view(torch.uint8).copy_(flat[at : at + n])
        tensors[name] = t.to(device)
        at += n
    return StreamState(**tensors, **paged.fields)


@dataclass
class PagingStats:
    page_outs: int = 0
    page_ins: int = 0
    prefetched: int = 0
    """Page-ins that were ready (or in flight) when their stream's turn came."""
    out_seconds: float = 0.0
    in_seconds: float = 0.0
    """Time decoding page-ins, wherever it ran (the helper thread, for prefetched ones)."""
    waited_seconds: float = 0.0
    """Of it, the time the step loop waited (prefetched page-ins mostly cost nothing)."""
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
        self._host: dict[str, PagedState] = {}  # least recently stepped first
        self._inflight: dict[str, Future[tuple[StreamState, float]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._codec = pa.Codec("zstd", compression_level=ZSTD_LEVEL)
        self.host_bytes = 0
        self.stats = PagingStats()

    # -- membership ---------------------------------------------------------------------------
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
        self._resident[stream_id] = state.to(self.device)  # restored ones come on the CPU

    def drop(self, stream_id: str) -> None:
        """Forget a stream's state, whichever tier holds it."""
        self._resident.pop(stream_id, None)
        self._inflight.pop(stream_id, None)
        paged = self._host.pop(stream_id, None)
        if paged is not None:
            self._forget_paged(paged)

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

    def copy(self, stream_id: str) -> StreamState:
        """A copy of the state, leaving every tier as it is (for a snapshot)."""
        if stream_id in self._resident:
            return self._resident[stream_id].clone()
        return unpack(self._host[stream_id], self._codec, self.device)

    def prefetch(self, stream_ids: list[str]) -> None:
        """Start decoding the host-tier states of the next batch on the helper thread; each
        becomes resident (making room then) when its batch steps."""
        wanted = [sid for sid in stream_ids if sid in self._host and sid not in self._inflight]
        if not wanted:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="page-in")
        for sid in wanted:
            self._inflight[sid] = self._pool.submit(self._timed_unpack, self._host[sid])

    def over_budget(
        self, movable: Callable[[str], bool], leaving: Collection[str] = ()
    ) -> list[str]:
        """Host-tier streams to move to the object store, least recently stepped first, so
        that the host tier fits its budget once they and ``leaving`` (already on their way)
        are gone. Only ``movable`` ones (the worker's: nothing queued, so their checkpoint
        holds all of them) are named; the predicate is asked only while over budget."""
        if self.host_limit is None:
            return []
        gone = sum(len(self._host[sid].blob) for sid in leaving if sid in self._host)
        excess = self.host_bytes - gone - self.host_limit
        out = []
        for sid, paged in self._host.items():
            if excess <= 0:
                break
            if sid not in self._inflight and movable(sid):
                out.append(sid)
                excess -= len(paged.blob)
        return out

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
        paged = pack(state, self._codec)
        self._host[stream_id] = paged
        self.host_bytes += len(paged.blob)
        self.stats.raw_bytes += paged.raw_size
        self.stats.page_outs += 1
        self.stats.out_seconds += time.perf_counter() - started

    def _page_in(self, stream_id: str) -> StreamState:
        started = time.perf_counter()
        future = self._inflight.pop(stream_id, None)
        paged = self._host.pop(stream_id)
        if future is not None:
            state, seconds = future.result()
            self.stats.prefetched += 1
            self.stats.waited_seconds += time.perf_counter() - started
        else:
            state, seconds = self._timed_unpack(paged)
            self.stats.waited_seconds += seconds
        self._forget_paged(paged)
        self.stats.page_ins += 1
        self.stats.in_seconds += seconds
        return state

    def _timed_unpack(self, paged: PagedState) -> tuple[StreamState, float]:
        started = time.perf_counter()
        state = unpack(paged, self._codec, self.device)
        return state, time.perf_counter() - started

    def _forget_paged(self, paged: PagedState) -> None:
        self.host_bytes -= len(paged.blob)
        self.stats.raw_bytes -= paged.raw_size
