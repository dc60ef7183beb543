"""Per-stream checkpoints in object storage, and the partition manifests that say where to
start reading after a failure.

Layout (keys under the store's root)::

    checkpoints/<stream_id>/<next_frame>.safetensors   what the stream needs to resume
    checkpoints/<stream_id>/<next_frame>.json          its manifest
    checkpoints/<stream_id>/latest.json                a copy of the newest manifest
    offsets/<topic>/<partition>.json                   every stream seen on the partition

A checkpoint object is one safetensors file (never pickle: it is read back from shared
storage): the model state (``StreamState.to_bytes``), the prompts still waiting for their
frame (as prompt records) and what the sinks buffer of the current window (Arrow IPC), each
as a byte tensor, with the counters in its metadata. Its manifest names the object, its
sha256, the model version and format, the frame it resumes at and the topic, partition and
offset of the next record to read. The last ``keep`` checkpoints of a stream are kept.

**Commit order** (the worker follows it; see ``CheckpointWriter``): the sinks are flushed
(a window's Parquet file is written before the window's frames leave the sink buffer, and
the tracks producer is flushed), then the state object is written, then its manifest, then
``latest.json``, then the partition manifest; Kafka offsets are committed last and only for
lag monitoring. A crash between any two steps leaves the previous checkpoint in force.
When the store fails a window's Parquet file, the window stays in its sink and the stream is
not snapshotted until the file is written (``SegmentationWorker._checkpoint_due``;
``WindowedSink.pending`` refuses a stream that owes a window), so no checkpoint ever covers
frames whose Parquet file is missing. Every step here is idempotent (same keys, same bytes),
so a write the store failed halfway is simply written again.

**Loading** tries ``latest.json`` and then the numbered manifests, newest first, and refuses
a checkpoint whose manifest cannot be read, names another stream or an object outside the
stream's folder, whose object is missing or fails its checksum, or that belongs to other
weights or another format, with a log line naming the stream, the object and the reason.
Stream ids are checked before a path is built from them (:mod:`~ausm_stream.pipeline.ids`),
and a stream's folder is listed without descending into folders below it.

The partition manifest lists, for each stream seen on the partition, the offset of its
first record and the offset its newest written checkpoint resumes at, and the partition's
position when it was written: recovery seeks to the smallest of what it needs, so a stream
without a checkpoint is replayed from its first record.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ausm_stream.errors import AUSMStreamError, RecordError, StateError
from ausm_stream.model import AUSMConfig, StreamState
from ausm_stream.model.state import STATE_VERSION, safetensors_metadata
from ausm_stream.operators.processor import StreamSnapshot
from ausm_stream.pipeline import kafka, records
from ausm_stream.pipeline.ids import check_stream_id, is_stream_id, shown
from ausm_stream.pipeline.storage import ObjectStore
from ausm_stream.pipeline.tracks import FRAME_INFO_SCHEMA, TRACKS_SCHEMA

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ausm-stream-checkpoint"
CHECKPOINT_VERSION = "2"
"""2: sink buffers record skipped frames (``worker.lag_policy``)."""


class CheckpointError(AUSMStreamError):
    """A checkpoint was refused; the message names the stream, the object and the reason."""


@dataclass
class Checkpoint:
    """One stream's snapshot plus what its sinks buffer, by sink name."""

    snapshot: StreamSnapshot
    pending: dict[str, tuple[pa.Table, pa.Table]] = field(default_factory=dict)
    """Sink name -> (buffered frames, their track rows), see ``WindowedSink.pending``."""


@dataclass(frozen=True)
class Manifest:
    stream_id: str
    frame_idx: int
    """The frame the stream resumes at (all before it are in the outputs)."""
    topic: str
    partition: int
    offset: int
    """Offset of the next record of the stream to read."""
    model_version: str
    state_version: str
    checkpoint_version: str
    object: str
    sha256: str
    ended: bool
    topic_id: str = ""
    """The frames topic's id when this was written (Kafka's topic id, new each time a topic
    is created): offsets of a recreated topic mean other records. "" where the broker gives
    none, and in manifests of builds before it: not checked then."""

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        try:
            fields = json.loads(data)
            return cls(**fields)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"manifest is not a valid checkpoint manifest: {exc}") from exc


@dataclass
class PartitionManifest:
    topic: str
    partition: int
    position: int
    """The partition's read position when this was written."""
    streams: dict[str, dict[str, int]] = field(default_factory=dict)
    """Stream id -> {"first": offset of its first record, "resume": where its newest written
    checkpoint resumes, or its first record's offset when it has none}."""
    topic_id: str = ""
    """As :attr:`Manifest.topic_id`."""


def stream_prefix(stream_id: str) -> str:
    """The folder of a stream's checkpoints; :class:`InvalidInputError` for an id that is not
    a stream id (:mod:`~ausm_stream.pipeline.ids`), before any path is built from it."""
    return f"checkpoints/{check_stream_id(stream_id)}/"


def offsets_key(topic: str, partition: int) -> str:
    return f"offsets/{topic}/{partition}.json"


# -- encoding ------------------------------------------------------------------------------
def _bytes_tensor(data: bytes) -> torch.Tensor:
    if not data:
        return torch.zeros(0, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _table(data: bytes, schema: pa.Schema) -> pa.Table:
    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    if not table.schema.equals(schema):
        raise ValueError(f"sink buffer schema does not match: {table.schema}")
    return table


def encode(ckpt: Checkpoint, model_version: str) -> bytes:
    snap = ckpt.snapshot
    tensors = {"state": _bytes_tensor(snap.state.to_bytes())}
    for i, (_, prompt) in enumerate(snap.prompts):
        tensors[f"prompt.{i}"] = _bytes_tensor(records.encode_prompt(prompt))
    for name, (infos, rows) in ckpt.pending.items():
        tensors[f"sink.{name}.frames"] = _bytes_tensor(_table_bytes(infos))
        tensors[f"sink.{name}.rows"] = _bytes_tensor(_table_bytes(rows))
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_version": model_version,
        "stream_id": snap.stream_id,
        "offset": str(snap.offset),
        "next_frame": str(snap.next_frame),
        "frames_done": str(snap.frames_done),
        "skipped": str(snap.skipped),
        "gaps": str(snap.gaps),
        "ended": "1" if snap.ended else "0",
        "prompt_frames": json.dumps([at for at, _ in snap.prompts]),
        "sinks": json.dumps(sorted(ckpt.pending)),
    }
    return st_save(tensors, metadata=meta)


def decode(blob: bytes, cfg: AUSMConfig, model_version: str) -> Checkpoint:
    """A checkpoint object back; ``CheckpointError`` (or ``StateError``) when it is not one
    of this model's."""
    try:
        meta = safetensors_metadata(blob)
        tensors = st_load(blob)
    except (SafetensorError, StateError, ValueError) as exc:
        raise CheckpointError(f"not a readable safetensors object: {exc}") from exc
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"format {meta.get('format')!r} version {meta.get('version')!r}; this build reads "
            f"{CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}"
        )
    if meta.get("model_version") != model_version:
        raise CheckpointError(
            f"written by model {meta.get('model_version')!r}, this worker runs {model_version!r}"
        )
    try:
        state = StreamState.from_bytes(tensors["state"].numpy().tobytes(), cfg)
        prompt_frames = json.loads(meta["prompt_frames"])
        prompts = [
            (
                int(at),
                records.decode_prompt(
                    tensors[f"prompt.{i}"].numpy().tobytes(), None, cfg.image_size
                ),
            )
            for i, at in enumerate(prompt_frames)
        ]
        pending = {
            name: (
                _table(tensors[f"sink.{name}.frames"].numpy().tobytes(), FRAME_INFO_SCHEMA),
                _table(tensors[f"sink.{name}.rows"].numpy().tobytes(), TRACKS_SCHEMA),
            )
            for name in json.loads(meta["sinks"])
        }
        snap = StreamSnapshot(
            stream_id=meta["stream_id"],
            state=state,
            offset=int(meta["offset"]),
            next_frame=int(meta["next_frame"]),
            frames_done=int(meta["frames_done"]),
            skipped=int(meta["skipped"]),
            gaps=int(meta["gaps"]),
            ended=meta["ended"] == "1",
            prompts=prompts,
        )
    except (KeyError, ValueError, pa.ArrowInvalid, RecordError, StateError) as exc:
        raise CheckpointError(f"checkpoint contents are incomplete or corrupt: {exc}") from exc
    return Checkpoint(snap, pending)


def _check_manifest(manifest: Manifest, stream_id: str) -> None:
    """A manifest read from ``stream_id``'s folder must name that stream and an object in
    that folder (a copied or forged one would restore another stream's state)."""
    if manifest.stream_id != stream_id:
        raise CheckpointError(
            f"manifest names stream {shown(manifest.stream_id)}, not {stream_id!r}"
        )
    prefix, obj = stream_prefix(stream_id), manifest.object
    inside = isinstance(obj, str) and obj.startswith(prefix) and "/" not in obj[len(prefix) :]
    if not inside or not obj.endswith(".safetensors"):
        raise CheckpointError(f"its object {shown(obj)} lies outside {prefix}")


# -- the store -----------------------------------------------------------------------------
class CheckpointStore:
    """Writes and loads checkpoints of one model's streams in an object store."""

    def __init__(
        self, store: ObjectStore, cfg: AUSMConfig, model_version: str, keep: int = 3
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.model_version = model_version
        self.keep = keep

    # writing (one thread: the worker's CheckpointWriter) -----------------------------------
    def write(self, ckpt: Checkpoint, topic: str, partition: int, topic_id: str = "") -> Manifest:
        """State object, then its manifest, then ``latest.json``; then older ones go."""
        snap = ckpt.snapshot
        prefix = stream_prefix(snap.stream_id)
        blob = encode(ckpt, self.model_version)
        obj = f"{prefix}{snap.next_frame:012d}.safetensors"
        manifest = Manifest(
            stream_id=snap.stream_id,
            frame_idx=snap.next_frame,
            topic=topic,
            partition=partition,
            offset=snap.offset,
            model_version=self.model_version,
            state_version=STATE_VERSION,
            checkpoint_version=CHECKPOINT_VERSION,
            object=obj,
            sha256=hashlib.sha256(blob).hexdigest(),
            ended=snap.ended,
            topic_id=topic_id,
        )
        text = json.dumps(asdict(manifest), indent=1).encode()
        self.store.put(obj, blob)
        self.store.put_atomic(f"{prefix}{snap.next_frame:012d}.json", text)
        self.store.put_atomic(f"{prefix}latest.json", text)
        self._prune(snap.stream_id)
        return manifest

    def _prune(self, stream_id: str) -> None:
        numbered = self._numbered_manifests(stream_id)
        for key in numbered[self.keep :]:
            self.store.delete(key.removesuffix(".json") + ".safetensors")
            self.store.delete(key)

    def write_partition(self, manifest: PartitionManifest) -> None:
        key = offsets_key(manifest.topic, manifest.partition)
        self.store.put_atomic(key, json.dumps(asdict(manifest), indent=1).encode())

    # loading --------------------------------------------------------------------------------
    def _numbered_manifests(self, stream_id: str) -> list[str]:
        """The stream's numbered manifests, newest first: in its folder only, not below it
        (objects there are no stream's: ids have no ``/``)."""
        keys = self.store.list(stream_prefix(stream_id), recursive=False)
        return sorted(
            (k for k in keys if k.endswith(".json") and not k.endswith("/latest.json")),
            reverse=True,
        )

    def load(self, stream_id: str, topic_id: str = "") -> tuple[Checkpoint, Manifest] | None:
        """The stream's newest valid checkpoint, or ``None`` when it has none. With
        ``topic_id``, checkpoints written for another topic of the same name (one deleted
        and created again) are refused."""
        prefix = stream_prefix(stream_id)
        candidates = [f"{prefix}latest.json", *self._numbered_manifests(stream_id)]
        tried: set[str] = set()
        for key in candidates:
            try:
                raw = self.store.get(key)
            except KeyError:
                continue
            try:
                manifest = Manifest.parse(raw)
                _check_manifest(manifest, stream_id)
                if topic_id and manifest.topic_id and manifest.topic_id != topic_id:
                    # Its older checkpoints are of the old topic too: none is taken.
                    log.error(
                        "stream %s: checkpoint %s was written for topic id %s, and %s is now "
                        "topic id %s (created again): the stream starts afresh",
                        stream_id,
                        key,
                        manifest.topic_id,
                        manifest.topic,
                        topic_id,
                    )
                    return None
                if manifest.object in tried:
                    continue
                tried.add(manifest.object)
                return self._load_object(manifest), manifest
            except (CheckpointError, ValueError) as exc:
                log.error(
                    "stream %s: checkpoint %s refused (%s); trying the previous one",
                    stream_id,
                    key,
                    exc,
                )
        return None

    def _load_object(self, manifest: Manifest) -> Checkpoint:
        if manifest.model_version != self.model_version:
            raise CheckpointError(
                f"written by model {manifest.model_version!r}, this worker runs "
                f"{self.model_version!r}"
            )
        if manifest.state_version != STATE_VERSION:
            raise CheckpointError(
                f"state format {manifest.state_version}, this build reads {STATE_VERSION}"
            )
        try:
            blob = self.store.get(manifest.object)
        except KeyError:
            raise CheckpointError(f"object {manifest.object} is missing") from None
        digest = hashlib.sha256(blob).hexdigest()
        if digest != manifest.sha256:
            raise CheckpointError(
                f"object {manifest.object} has sha256 {digest[:12]}..., the manifest says "
                f"{manifest.sha256[:12]}... (truncated or damaged)"
            )
        ckpt = decode(blob, self.cfg, self.model_version)
        if ckpt.snapshot.stream_id != manifest.stream_id:
            raise CheckpointError(f"object {manifest.object} is of {ckpt.snapshot.stream_id!r}")
        return ckpt

    def load_partition(self, topic: str, partition: int) -> PartitionManifest | None:
        key = offsets_key(topic, partition)
        try:
            raw = self.store.get(key)
        except KeyError:
            return None
        try:
            manifest = PartitionManifest(**json.loads(raw))
            if (manifest.topic, manifest.partition) != (topic, partition):
                raise ValueError(f"it is {manifest.topic}/{manifest.partition}'s")
        except (ValueError, TypeError) as exc:
            log.error("%s refused (%s); reading the partition from its start", key, exc)
            return None
        return manifest

    def discover(self, topic: str, partition: int, partitions: int) -> list[str]:
        """Streams with checkpoints whose key hashes to ``partition`` (when the partition's
        manifest is missing or unreadable). Folders that are not a stream's (``a/b``, or
        named by no stream id) are no stream."""
        keys = self.store.list("checkpoints/")
        streams = {k.split("/")[1] for k in keys if k.count("/") == 2}
        return sorted(
            s
            for s in streams
            if is_stream_id(s) and kafka.partition_for(s, partitions) == partition
        )
