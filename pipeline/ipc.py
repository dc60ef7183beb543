"""Arrow IPC records read with every declared size bounded before anything is decompressed.

Each Kafka message of the pipeline is one Arrow IPC stream: a schema message, one record
batch message, the end marker. The batch message's metadata (a flatbuffer: ``Message`` and
``RecordBatch`` of Arrow's ``Message.fbs``) holds the row count, each array's length and
null count (``FieldNode``) and where each buffer lies in the body (``Buffer``). With body
compression (zstd, as frame chunks use) a buffer is its uncompressed length, a little-endian
int64, followed by the compressed bytes (length -1: stored as is). Arrow's reader allocates
that length and inflates into it before anyone can look at a value, so a record a few KiB
long can inflate a value of hundreds of MiB, and nothing ties a buffer's length to its rows.

pyarrow does not expose those fields, so :func:`open_record` reads them from the flatbuffer
itself (:class:`_Table`: the few fields above, every offset checked against the metadata's
length) and the 8-byte prefixes from the body, decompressing nothing. The
:class:`IpcRecord` it returns has already

- refused a record with no rows or more than ``max_rows``, and nulls where the schema may
  have none (from the null counts);
- bounded every buffer by what its rows need: a bitmap, ``rows x width`` values,
  ``rows + 1`` offsets and, for strings and binaries, ``rows x`` a cap per value the caller
  gives (``value_bytes``).

A string or binary column without a cap (``rgb``, whose values are ``H x W x 3`` bytes by
the frame size the same record declares) stays unread until :meth:`IpcRecord.bound` has
checked it against a limit computed from columns read before it. :meth:`IpcRecord.read`
reads only the columns asked for (pyarrow's ``included_fields``: the buffers of the others
stay compressed, untouched) and validates what it read in full.

The flatbuffer layout is Arrow's IPC format, stable since Arrow 1.0; ``tests/pipeline/
test_ipc.py`` checks that the sizes read here are the buffers pyarrow reads. pyarrow reads the
same bytes afterwards and still checks them (a buffer that inflates to another size than it
declared, offsets past their data).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from ausm_stream.errors import RecordError

SLACK_BYTES = 64
"""Bytes a buffer may hold past what its rows need (writers pad buffers to 8 or 64 bytes)."""

RECORD_BATCH = 3
"""``MessageHeader.RecordBatch`` in Arrow's ``Message.fbs``."""


class _Table:
    """One flatbuffer table: the accessors Arrow's message metadata needs, each offset checked
    against the metadata's length (``ValueError`` when it points outside)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vtable = pos - _unpack(buf, "<i", pos)
        self.vtable_size = _unpack(buf, "<H", self.vtable)

    def _field(self, slot: int) -> int | None:
        entry = 4 + 2 * slot
        if entry + 2 > self.vtable_size:
            return None
        offset = _unpack(self.buf, "<H", self.vtable + entry)
        return self.pos + offset if offset else None

    def scalar(self, slot: int, fmt: str, default: int = 0) -> int:
        at = self._field(slot)
        return default if at is None else _unpack(self.buf, fmt, at)

    def table(self, slot: int) -> _Table | None:
        at = self._field(slot)
        return None if at is None else _Table(self.buf, at + _unpack(self.buf, "<I", at))

    def structs(self, slot: int, fmt: str) -> list[tuple[int, ...]]:
        """A vector of structs (or of scalars) as tuples."""
        at = self._field(slot)
        if at is None:
            return []
        start = at + _unpack(self.buf, "<I", at)
        count = _unpack(self.buf, "<I", start)
        size = struct.calcsize(fmt)
        if start + 4 + count * size > len(self.buf):
            raise ValueError(f"a vector of {count} entries runs past the metadata")
        return [struct.unpack_from(fmt, self.buf, start + 4 + i * size) for i in range(count)]


def _unpack(buf: bytes, fmt: str, pos: int) -> int:
    if pos < 0 or pos + struct.calcsize(fmt) > len(buf):
        raise ValueError(f"metadata offset {pos} lies outside its {len(buf)} bytes")
    return struct.unpack_from(fmt, buf, pos)[0]


@dataclass(frozen=True)
class _Batch:
    """What a record batch message declares."""

    rows: int
    nodes: list[tuple[int, int]]
    """(length, null count) of every array, depth first."""
    sizes: list[int]
    """Every buffer's bytes once decompressed, in order."""


def _declared(message: pa.ipc.Message) -> _Batch:
    """The row count, array nodes and buffer sizes of a record batch message, read from its
    metadata and the buffers' length prefixes; ``ValueError`` when they are malformed."""
    meta = message.metadata.to_pybytes()
    root = _Table(meta, _unpack(meta, "<I", 0))
    header = root.table(2)
    if root.scalar(1, "<B") != RECORD_BATCH or header is None:
        raise ValueError("the second message is not a record batch")
    rows = header.scalar(0, "<q")
    nodes = [(int(n), int(nulls)) for n, nulls in header.structs(1, "<qq")]
    compressed = header.table(3) is not None
    if header.structs(4, "<q"):
        raise ValueError("variadic buffers (view types) are not used by these records")
    body = memoryview(message.body) if message.body is not None else memoryview(b"")
    sizes = []
    for offset, length in header.structs(2, "<qq"):
        if offset < 0 or length < 0 or offset + length > len(body):
            raise ValueError(f"a buffer at {offset} of {length} bytes lies outside the body")
        if not compressed or length == 0:
            sizes.append(length)
            continue
        if length < 8:
            raise ValueError(f"a compressed buffer of {length} bytes has no length prefix")
        declared = int.from_bytes(body[offset : offset + 8], "little", signed=True)
        if declared < -1:
            raise ValueError(f"a buffer declares {declared} bytes")
        sizes.append(length - 8 if declared == -1 else declared)
    return _Batch(rows, nodes, sizes)


@dataclass(frozen=True)
class _Buffer:
    column: str
    """The array's path: its top-level column, then its fields' names (``bbox.x0``)."""
    role: str
    """``validity``, ``bits`` (booleans), ``values``, ``offsets`` or ``data``."""
    length: int
    """Elements of the array the buffer belongs to."""
    nulls: int
    """Nulls among them."""
    declared: int
    """Bytes once decompressed."""

    @property
    def top(self) -> str:
        return self.column.split(".")[0]


def _roles(t: pa.DataType) -> tuple[list[str], list[pa.Field]]:
    """An array's buffers (their roles) and its children."""
    if pa.types.is_struct(t):
        return ["validity"], [t.field(i) for i in range(t.num_fields)]
    if pa.types.is_binary(t) or pa.types.is_string(t):
        return ["validity", "offsets", "data"], []
    if pa.types.is_boolean(t):
        return ["validity", "bits"], []
    if pa.types.is_primitive(t) and not pa.types.is_null(t):
        return ["validity", "values"], []
    raise ValueError(f"type {t} is not used by these records")


def _walk(field: pa.Field, path: str, rows: int, batch: _Batch, at: list[int]) -> list[_Buffer]:
    """The buffers of one field and its children, matched with the batch's nodes and buffers
    from ``at`` = [next node, next buffer] on (advanced)."""
    if at[0] >= len(batch.nodes):
        raise ValueError("it declares fewer arrays than its schema has")
    length, nulls = batch.nodes[at[0]]
    at[0] += 1
    if length != rows or not 0 <= nulls <= length:
        raise ValueError(f"{path!r} has {length} values and {nulls} nulls in {rows} rows")
    roles, children = _roles(field.type)
    if at[1] + len(roles) > len(batch.sizes):
        raise ValueError("it declares fewer buffers than its schema has")
    out = [
        _Buffer(path, role, length, nulls, batch.sizes[at[1] + i]) for i, role in enumerate(roles)
    ]
    at[1] += len(roles)
    for child in children:
        out += _walk(child, f"{path}.{child.name}", length, batch, at)
    return out


def _need(buffer: _Buffer, width: int) -> int:
    """Bytes a validity, values or offsets buffer needs for its array's length."""
    n = buffer.length
    if buffer.role in ("validity", "bits"):
        return (n + 7) // 8
    return n * width if buffer.role == "values" else (n + 1) * 4


class IpcRecord:
    """A record batch's declared sizes, checked, and reads of its columns (module doc)."""

    def __init__(
        self,
        value: bytes,
        kind: str,
        schema: pa.Schema,
        rows: int,
        buffers: list[_Buffer],
        pending: set[str],
    ) -> None:
        self.value = value
        self.kind = kind
        self.schema = schema
        self.rows = rows
        self.buffers = buffers
        self.pending = pending
        """Columns whose values are not bounded yet (:meth:`bound` them before reading)."""

    def bound(self, column: str, limit: int, context: str, need: str) -> None:
        """Allow reading ``column`` if its values hold at most ``limit`` bytes; else
        :class:`RecordError` ``"<context>: <column> declares N bytes; <need>"``."""
        data = sum(b.declared for b in self.buffers if b.top == column and b.role == "data")
        if data > limit + SLACK_BYTES:
            raise RecordError(f"{context}: {column} declares {data} bytes; {need}")
        self.pending.discard(column)

    def read(self, columns: Collection[str] | None = None) -> pa.RecordBatch:
        """The batch with only ``columns`` (default: all), decompressed and validated; the
        other columns' buffers stay compressed."""
        names = list(self.schema.names if columns is None else columns)
        unbounded = sorted(self.pending.intersection(names))
        if unbounded:
            raise RuntimeError(f"read {unbounded} of a {self.kind} record before bounding them")
        included = sorted(self.schema.get_field_index(n) for n in names)
        options = pa.ipc.IpcReadOptions(included_fields=included)
        try:
            batch = pa.ipc.open_stream(pa.py_buffer(self.value), options=options).read_next_batch()
            batch.validate(full=True)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            raise RecordError(
                f"{self.kind} record is not a readable Arrow IPC stream: {exc}"
            ) from exc
        return batch


def open_record(
    value: bytes,
    schemas: Sequence[pa.Schema],
    kind: str,
    max_rows: int,
    value_bytes: Mapping[str, int],
    nullable: Collection[str] = (),
) -> IpcRecord:
    """``value``'s one record batch, its declared sizes checked (module doc); nothing is
    decompressed. ``value_bytes``: the most bytes one value of a string or binary column may
    hold; a column without one must be :meth:`IpcRecord.bound` before it is read.
    :class:`RecordError` naming ``kind`` and what is wrong."""
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(value))
        head = reader.read_next_message()
        message = reader.read_next_message()
        more = _next_message(reader)
        if head.type != "schema":
            raise ValueError(f"it starts with a {head.type} message, not its schema")
        schema = pa.ipc.read_schema(head)
    except StopIteration:
        raise RecordError(f"{kind} record must hold one record batch, found none") from None
    except (ValueError, pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise RecordError(f"{kind} record is not a readable Arrow IPC stream: {exc}") from exc
    if more:
        raise RecordError(f"{kind} record must hold one record batch, found more")
    if not any(schema.equals(s) for s in schemas):
        raise RecordError(f"{kind} record schema does not match: got {schema}")
    try:
        batch = _declared(message)
        at = [0, 0]
        buffers = [b for f in schema for b in _walk(f, f.name, batch.rows, batch, at)]
        if at != [len(batch.nodes), len(batch.sizes)]:
            raise ValueError("it declares more arrays or buffers than its schema has")
    except ValueError as exc:
        raise RecordError(f"{kind} record is not a readable Arrow IPC stream: {exc}") from None
    if batch.rows <= 0:
        raise RecordError(f"{kind} record is empty")
    if batch.rows > max_rows:
        raise RecordError(f"{kind} record holds {batch.rows} rows, at most {max_rows}")
    for b in buffers:
        if b.role == "validity" and b.nulls and b.column == b.top and b.top not in nullable:
            raise RecordError(f"{kind} record has nulls in {b.column!r}")
    pending = set()
    for b in buffers:
        if b.role == "data" and b.top not in value_bytes:
            pending.add(b.top)
            continue
        if b.role == "data":
            limit = b.length * value_bytes[b.top]
        else:
            limit = _need(b, _width(schema, b.column))
        if b.declared > limit + SLACK_BYTES:
            raise RecordError(
                f"{kind} record: {b.column!r} declares {b.declared} bytes of {b.role} for "
                f"{b.length} values, at most {limit} fit"
            )
    return IpcRecord(value, kind, schema, batch.rows, buffers, pending)


def _width(schema: pa.Schema, path: str) -> int:
    """Value width in bytes of the (possibly nested) fixed-width field at ``path``."""
    top, *rest = path.split(".")
    t = schema.field(top).type
    for name in rest:
        t = t.field(name).type
    return t.bit_width // 8 if pa.types.is_primitive(t) and not pa.types.is_boolean(t) else 0


def _next_message(reader: pa.ipc.MessageReader) -> bool:
    """Whether another message follows (the end marker is none)."""
    try:
        reader.read_next_message()
    except StopIteration:
        return False
    return True
