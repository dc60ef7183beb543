"""A worker's resident memory kept close to what it uses (glibc's allocator and Arrow's pool).

States, frames and activations are allocated and freed in MB-sized blocks all the time.
glibc serves blocks above its mmap threshold with their own mappings, returned to the OS
when freed, but raises that threshold after each such free, so soon it keeps every block in
its heap: a worker's resident memory grew by ~400 MB over 640 frames of 40 streams and
stayed there (measured; ``malloc_trim`` gave 340 MB of it back). A fixed threshold keeps
large blocks mapped (an mmap per state copy costs ~2% of a step), and
:func:`release_freed_memory`, called once a second by the worker, trims the heap, so the
budgets of ``worker.resident_streams`` and ``host_state_bytes`` are what the process holds.
On another C library both are no-ops for glibc's part.
"""

from __future__ import annotations

import ctypes

import pyarrow as pa

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number."""
MMAP_THRESHOLD_BYTES = 256 * 1024


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()


def configure_allocator() -> None:
    """Fix glibc's mmap threshold (once per process, before the model is built)."""
    if _LIBC is not None:
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_freed_memory() -> None:
    """Hand freed memory back to the OS: glibc's heap (``malloc_trim``) and Arrow's pool,
    which decodes records and encodes Parquet and keeps freed pages for reuse."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
