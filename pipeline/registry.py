"""The stream registry: which streams the control plane runs, kept in the object store.

One small JSON object per stream, ``registry/streams/<id>.json`` (SYSTEM.md), so that a
restarted cluster knows every stream an operator added and restarts their ingest. The
registry holds what was asked for (source, rate, when); what happens to a stream (frames,
lag, tracks) is the workers' status, never stored here.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from ausm_stream.errors import InvalidInputError
from ausm_stream.pipeline.ids import check_stream_id
from ausm_stream.pipeline.storage import ObjectStore

PREFIX = "registry/streams/"
EXTERNAL = "external"
"""The source of a stream whose ingest runs elsewhere (``ausm-stream ingest`` by a camera)."""
MAX_OBJECT_ID = 2**53 - 1
"""Highest prompt object id: exact in JSON everywhere (JavaScript's safe integers) and far
inside the track records' int64, so the ids given after it (one more each) fit too."""
PROBE_KEY = "registry/probe"
"""Never written: :meth:`StreamRegistry.probe` asks the store for it."""


@dataclass(frozen=True)
class RegisteredStream:
    id: str
    source: str
    """A file path or URL that ingest opens, or ``external``."""
    fps: float | None = None
    """Resample to this rate (``None``: the source's own)."""
    created: float = 0.0
    """Unix time it was added."""
    first_frame: int = 0
    """Index of its first frame: 0, or where an earlier stream of the same id ended (a stream
    added again after removal continues the frame numbering, so no output row is replaced)."""
    next_object_id: int = 1
    """The object id the next prompt that names none gets."""

    @property
    def external(self) -> bool:
        return self.source == EXTERNAL


class StreamRegistry:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def _key(self, stream_id: str) -> str:
        return f"{PREFIX}{check_stream_id(stream_id)}.json"

    def put(self, stream: RegisteredStream) -> None:
        self.store.put_atomic(self._key(stream.id), json.dumps(asdict(stream)).encode())

    def get(self, stream_id: str) -> RegisteredStream | None:
        try:
            return self._parse(self._key(stream_id), self.store.get(self._key(stream_id)))
        except KeyError:
            return None

    def remove(self, stream_id: str) -> None:
        self.store.delete(self._key(stream_id))

    def probe(self) -> None:
        """One round trip to the store (a read of a key never written), however many streams
        are registered: raises when the store does not answer."""
        self.store.exists(PROBE_KEY)

    def all(self) -> list[RegisteredStream]:
        """Every registered stream, by id (objects in folders below the registry's are none)."""
        keys = sorted(k for k in self.store.list(PREFIX, recursive=False) if k.endswith(".json"))
        return [self._parse(k, self.store.get(k)) for k in keys]

    @staticmethod
    def _parse(key: str, data: bytes) -> RegisteredStream:
        try:
            return RegisteredStream(**json.loads(data))
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(
                f"registry object {key!r} is unreadable ({exc}); delete it and add the stream again"
            ) from exc


def new_stream(stream_id: str, source: str, fps: float | None) -> RegisteredStream:
    """A stream to register now (its id checked)."""
    return RegisteredStream(check_stream_id(stream_id), source, fps, time.time())
