"""kafka-python producers, consumers and topic set-up, with settings for large messages.

Consumers use explicit ``assign()`` of partitions, never group membership: partitions are
given to workers by the coordinator (SYSTEM.md), and against Tansu a group join takes ~20 s.
kafka-python needs its ``crc32c`` extra: without it checksums are computed in pure Python
and throughput drops ~25x.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from collections.abc import Collection, Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata

from ausm_stream.errors import RecordError
from ausm_stream.pipeline.config import KafkaConfig
from ausm_stream.pipeline.ids import STREAM_ID_RULE, is_stream_id, shown
from ausm_stream.pipeline.records import KIND_HEADER

log = logging.getLogger(__name__)

MAX_ERROR_HEADER_BYTES = 4096
"""Bytes of a dead letter's reason at most. A reason quotes what is wrong (a schema, a list
of frame indexes): one once grew to 17 MiB for a 0.33 MiB record, and the dead letter itself
was then too large to send."""


def partition_for(stream_id: str, partitions: int) -> int:
    """The partition of a stream's key: stable across processes and languages (CRC-32)."""
    return zlib.crc32(stream_id.encode()) % partitions


def stream_key(msg: ConsumerRecord, partitions: int) -> str:
    """The stream id a frames-topic record is keyed by, checked. :class:`RecordError` (the
    record goes to the dead-letter topic) when it has no key, its key is not a stream id
    (:mod:`.ids`: it names checkpoint paths), or it lies on another partition than its key's:
    a stream is recovered from its key's partition only (:func:`partition_for`)."""
    where = f"{msg.topic}/{msg.partition}/{msg.offset}"
    if not msg.key:
        raise RecordError(f"record at {where} has no key: frames records are keyed by stream id")
    try:
        key = msg.key.decode()
    except UnicodeDecodeError:
        raise RecordError(f"key {shown(msg.key)} at {where} is not UTF-8") from None
    if not is_stream_id(key):
        raise RecordError(f"key {shown(key)} at {where} is not a stream id: {STREAM_ID_RULE}")
    home = partition_for(key, partitions)
    if msg.partition != home:
        raise RecordError(
            f"record of stream {key!r} at {where} is on partition {msg.partition}; its key's is "
            f"{home} (of kafka.partitions {partitions}): its producer hashed it with another "
            "partition count"
        )
    return key


def error_header(reason: str) -> bytes:
    """A dead letter's reason as its header value: UTF-8, cut to
    :data:`MAX_ERROR_HEADER_BYTES` (at a character's boundary, saying so)."""
    data = reason.encode()
    if len(data) <= MAX_ERROR_HEADER_BYTES:
        return data
    tail = f" ... (cut from {len(data)} bytes)".encode()
    head = data[: MAX_ERROR_HEADER_BYTES - len(tail)].decode(errors="ignore").encode()
    return head + tail


STOP_FLUSH_S = 10.0
"""Longest a stopping producer (ingest, a worker's run) waits for the brokers to take what it
sent: they may be away, and what they did not take is sent again by the next run."""
ACK_STALL_S = 5.0
"""A record unacknowledged this long means the brokers are away: reported (ingest's drops, a
worker's broker health) while the producer keeps retrying it."""
RECONNECT_BACKOFF_MAX_MS = 2000
"""Longest a client waits between tries to reach a broker that is down (kafka-python's default
is 30 s): a broker back from an outage is used again within 2 s, not half a minute later."""


def _client_settings(cfg: KafkaConfig) -> dict[str, object]:
    """What every client gets: the security settings and the reconnect back-off."""
    return {**cfg.client_settings(), "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS}


def _admin(cfg: KafkaConfig, bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="ausm-admin", **_client_settings(cfg)
    )


def topic_settings(cfg: KafkaConfig) -> dict[str, str]:
    """The settings of a topic ausm-stream creates: records up to ``max_message_bytes``, and
    ``kafka.topic_configs``."""
    settings = {"max.message.bytes": str(cfg.max_message_bytes)}
    settings.update({k: str(v) for k, v in cfg.topic_configs.items()})
    return settings


def ensure_topics(cfg: KafkaConfig, bootstrap: str) -> None:
    admin = _admin(cfg, bootstrap)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                t,
                num_partitions=cfg.partitions,
                replication_factor=cfg.replication_factor,
                topic_configs=topic_settings(cfg),
            )
            for t in (cfg.frames_topic, cfg.tracks_topic, cfg.dead_letter_topic)
            if t not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                admin.create_topics(wanted)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if {t.name for t in wanted} <= set(admin.list_topics()):
                break
            time.sleep(0.1)
    finally:
        admin.close()


def topic_id(cfg: KafkaConfig, bootstrap: str, topic: str) -> str:
    """The topic's id: Kafka gives each topic a new one when it is created, so a topic
    deleted and created again under the same name is told apart (its offsets start over and
    mean other records). "" where the broker gives none."""
    admin = _admin(cfg, bootstrap)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    value = str(described.get("topic_id") or "")
    return "" if value.strip("0-") == "" else value  # none, or the all-zero id


def make_producer(
    cfg: KafkaConfig, bootstrap: str, max_block_ms: int = 60_000, connect_ms: int = 30_000
) -> KafkaProducer:
    """An idempotent producer (kafka-python's default): it retries a record through a broker
    outage, in order and without duplicates, for ``kafka.delivery_timeout_s`` before its
    future fails. ``max_block_ms``: longest a send waits for room in the producer's buffer
    (or for a metadata answer) before it raises ``KafkaTimeoutError``; ``connect_ms``: how
    long making it waits for a first broker (then ``KafkaTimeoutError``)."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        bootstrap_timeout_ms=connect_ms,
        max_request_size=cfg.max_message_bytes,
        linger_ms=5,
        acks="all",
        delivery_timeout_ms=int(cfg.delivery_timeout_s * 1000),
        max_block_ms=max_block_ms,
        **_client_settings(cfg),
    )


def make_consumer(cfg: KafkaConfig, bootstrap: str, group_id: str | None = None) -> KafkaConsumer:
    """A consumer for explicit ``assign()``; ``group_id`` only names where offsets are
    committed (for lag monitoring), the group is never joined."""
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        # Room for the largest record and then some: what a consumer reads ahead sits in
        # its memory (a worker's back-pressure, ``worker.max_queued_bytes``, counts the rest).
        fetch_max_bytes=2 * cfg.max_message_bytes,
        max_partition_fetch_bytes=cfg.max_message_bytes,
        fetch_max_wait_ms=cfg.fetch_max_wait_ms,
        auto_offset_reset="earliest",
        **_client_settings(cfg),
    )


def close_now(producer: KafkaProducer) -> None:
    """Close ``producer`` at once, giving up the records it still holds (their futures fail).
    kafka-python's ``close(timeout=0)`` flushes first and raises ``KafkaTimeoutError`` while
    records are pending (3.0.12), leaving the producer and its retries running: its sender
    is told to abort them first (no public call does)."""
    sender = producer._sender
    if sender is not None:
        sender.force_close()
        sender.join(STOP_FLUSH_S)
    try:
        producer.close(timeout=0)
    except KafkaTimeoutError:
        log.warning("a Kafka producer did not close within %s s", STOP_FLUSH_S)


class LagCommitter:
    """Commits offsets for lag monitoring (``kafka.lag_group``) from a thread and consumer of
    its own. A consumer with a group id looks for the group's coordinator inside ``poll`` and
    blocks there while the brokers are away (kafka-python, measured: a worker's loop stood
    still for the whole of a 40 s outage); the worker's own consumer therefore has none, and
    its loop never waits on a commit. The newest offsets offered win; older ones are skipped."""

    def __init__(self, cfg: KafkaConfig, bootstrap: str, topic: str) -> None:
        self.cfg, self.bootstrap, self.topic = cfg, bootstrap, topic
        self._offsets: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lag-committer", daemon=True)
        self._thread.start()

    def offer(self, offsets: dict[int, int]) -> None:
        """Per partition, the offset a recovery would read from: committed soon."""
        with self._cond:
            self._offsets.update(offsets)
            self._cond.notify()

    def close(self, timeout_s: float = STOP_FLUSH_S) -> None:
        """Commit what was offered (``timeout_s`` at most: the brokers may be away)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def _pending(self) -> dict[int, int]:
        return {p: o for p, o in self._offsets.items() if self._committed.get(p) != o}

    def _run(self) -> None:
        consumer = None
        try:
            while True:
                with self._cond:
                    while not self._pending() and not self._closed:
                        self._cond.wait()
                    pending = self._pending()
                    if not pending:
                        return
                try:
                    if consumer is None:
                        consumer = make_consumer(self.cfg, self.bootstrap, self.cfg.lag_group)
                    consumer.commit(
                        {
                            TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                            for p, o in pending.items()
                        }
                    )
                except Exception as exc:  # lag monitoring only: never stops anything
                    log.warning("committing offsets for lag monitoring failed: %s", exc)
                    time.sleep(1.0)
                    continue
                with self._cond:
                    self._committed.update(pending)
        finally:
            if consumer is not None:
                consumer.close(autocommit=False)


def send(
    producer: KafkaProducer,
    topic: str,
    key: str,
    value: bytes,
    kind: str,
    extra_headers: Iterable[tuple[str, bytes]] = (),
    partition: int | None = None,
) -> FutureRecordMetadata:
    """Send one record; the future's result says at which offset it landed."""
    headers = [(KIND_HEADER, kind.encode()), *extra_headers]
    return producer.send(topic, key=key.encode(), value=value, headers=headers, partition=partition)


def header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str | None:
    for k, v in headers or ():
        if k == name:
            return v.decode(errors="replace") if v is not None else None
    return None


def assign(consumer: KafkaConsumer, topic: str, partitions: Iterable[int]) -> list[TopicPartition]:
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    return tps


class TopicReader:
    """Reads back what a topic holds (the end of partitions, a key's newest record) with one
    consumer kept open: the control plane asks this for every prompt, and a consumer created
    per question cost its process ~50 ms of CPU each (measured with ``bench/api.py``).
    Safe to share between threads (one question at a time)."""

    def __init__(self, cfg: KafkaConfig, bootstrap: str) -> None:
        self.consumer = make_consumer(cfg, bootstrap)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def end_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """One past the last offset of each partition, read rather than asked for.

        Tansu (the embedded broker) answers a ListOffsets request for the latest offset with
        the base offset of the last record batch plus one (measured: 4 records sent as a batch
        of 1 and a batch of 3 report 2, not 4), so the records of the last batch would be
        missed. Reading from the reported offset on finds them; against other brokers it reads
        nothing."""
        with self._lock:
            return self._end_offsets(topic, partitions)

    def _end_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        consumer = self.consumer
        tps = assign(consumer, topic, partitions)
        ends = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp.partition] - 1))
        # A record batch comes whole in one fetch: one answer per partition that holds
        # records is enough (two empty polls in a row end the wait for the rest).
        pending = {p for p, end in ends.items() if end > 0}
        deadline, quiet = time.monotonic() + 30, 0
        while pending and quiet < 2 and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=200, max_records=1_000_000)  # the whole fetch
            quiet = 0 if polled else quiet + 1
            for tp, msgs in polled.items():
                ends[tp.partition] = max(ends[tp.partition], msgs[-1].offset + 1)
                pending.discard(tp.partition)
        return ends

    def last_record_of(
        self,
        topic: str,
        partition: int,
        key: str,
        window: int = 64,
        before: int | None = None,
        kinds: Collection[str] | None = None,
    ) -> ConsumerRecord | None:
        """The newest record of ``key`` in one partition (before offset ``before``, if
        given; of one of ``kinds``, by its kind header, if given), or ``None``: what a
        restarted producer reads back to continue after what it already sent. Reads
        backwards in growing windows from the end, so a busy partition costs a few fetches,
        not a scan from the start."""
        with self._lock:
            consumer = self.consumer
            hi = before if before is not None else self._end_offsets(topic, [partition])[partition]
            (tp,) = assign(consumer, topic, [partition])
            start = consumer.beginning_offsets([tp])[tp]
            while hi > start:
                lo = max(start, hi - window)
                consumer.seek(tp, lo)
                found = None
                deadline = time.monotonic() + 30
                while consumer.position(tp) < hi and time.monotonic() < deadline:
                    for msgs in consumer.poll(timeout_ms=1000).values():
                        for msg in msgs:
                            if (
                                msg.offset < hi
                                and msg.key == key.encode()
                                and (kinds is None or header(msg.headers, KIND_HEADER) in kinds)
                            ):
                                found = msg
                if found is not None:
                    return found
                hi, window = lo, window * 4
            return None


def end_offsets(
    cfg: KafkaConfig, bootstrap: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """:meth:`TopicReader.end_offsets` with a consumer of its own."""
    with TopicReader(cfg, bootstrap) as reader:
        return reader.end_offsets(topic, partitions)


def last_record_of(
    cfg: KafkaConfig, bootstrap: str, topic: str, partition: int, key: str, **kw: object
) -> ConsumerRecord | None:
    """:meth:`TopicReader.last_record_of` with a consumer of its own."""
    with TopicReader(cfg, bootstrap) as reader:
        return reader.last_record_of(topic, partition, key, **kw)
