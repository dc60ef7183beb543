"""One configuration for the whole pipeline: a YAML file plus environment overrides.

Every section is a frozen dataclass. The YAML mirrors them::

    kafka:   {bootstrap: "broker:9092", frames_topic: ausm.frames, partitions: 8}
    storage: {url: "s3://bucket/prefix", endpoint: "http://minio:9000", access_key: ...}
    ray:     {address: auto}
    model:   {weights: default}
    ingest:  {chunk_frames: 8, fps: 8}
    worker:  {parquet_frames: 64, cpus: 1, count: 0}
    api:     {host: 127.0.0.1, port: 8000, token: ...}

An environment variable ``AUSM_<SECTION>__<KEY>`` overrides a key (``AUSM_KAFKA__BOOTSTRAP``).
Unknown sections or keys and values of the wrong type are errors that name the key. With
no file at all every default applies, and the ``embedded`` values mean "start it here":
an embedded Kafka-compatible broker, a local directory for objects, a local Ray.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ausm_stream.errors import ConfigError, InvalidInputError
from ausm_stream.pipeline.geometry import Fit
from ausm_stream.pipeline.records import MAX_CHUNK_FRAMES
from ausm_stream.pipeline.sources import NETWORK_SCHEMES, SourcePolicy

ENV_PREFIX = "AUSM_"
LagPolicy = Literal["process_all", "skip_to_live"]
StateDtype = Literal["float32", "float16", "bfloat16"]
"""``AUSMConfig.state_dtype``'s choices (this package does not import the model's)."""
Device = Literal["auto", "cpu", "cuda"]
Autocast = Literal["off", "bfloat16", "float16"]
"""``AUSMConfig.autocast``'s choices."""
ScanBackend = Literal["auto", "torch", "mamba_ssm"]
"""``AUSMConfig.scan_backend``'s choices."""
MIN_DELIVERY_TIMEOUT_S = 31.0
"""kafka-python's request timeout (30 s) plus the producer's linger, rounded up."""
KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str = "embedded"
    """``host:port[,host:port]``, or ``embedded`` to start a Tansu broker on loopback."""
    embedded_log: Literal["memory", "store"] = "memory"
    """Where the embedded broker keeps its log: in memory (lost when it restarts), or in the
    S3 bucket of ``storage.url`` (``store``: it outlives the broker; needs an ``s3://`` store).
    For demos and tests: a broker restart can lose an acknowledged record (see
    :mod:`~ausm_stream.pipeline.broker`); production uses a Kafka cluster."""
    frames_topic: str = "ausm.frames"
    tracks_topic: str = "ausm.tracks"
    dead_letter_topic: str = "ausm.dead-letter"
    partitions: int = 4
    max_message_bytes: int = 16 * 1024 * 1024
    """Frame chunks are large (8 frames at 256 px ~ 1.5 MB before zstd)."""
    lag_group: str = "ausm-workers"
    """Consumer group under which workers commit the offsets their checkpoints cover, so that
    standard Kafka tools show the lag. Never joined: partitions are assigned explicitly, and
    recovery reads offsets from the checkpoints, not from Kafka."""
    fetch_max_wait_ms: int = 50
    """Longest a consumer's fetch waits at the broker for records. Tansu (the embedded broker)
    answers a waiting fetch only when this runs out, not when records arrive: with
    kafka-python's default of 500 ms, a worker that had caught up got each new chunk about
    0.15-0.5 s late (measured 150 ms, against 4 ms at 100 ms). An idle consumer pays for a
    short wait with more, tiny, fetch requests (20 a second at 50 ms)."""
    security_protocol: KafkaProtocol = "PLAINTEXT"
    """How every client (workers, ingest, the API, topic set-up) talks to the brokers: TLS
    (``SSL``), SASL authentication (``SASL_PLAINTEXT``), or both (``SASL_SSL``, what a
    managed Kafka asks for). The embedded broker speaks ``PLAINTEXT`` on loopback only."""
    ssl_cafile: str | None = None
    """PEM file of the CA that signed the brokers' certificates (the system's CAs when unset)."""
    ssl_certfile: str | None = None
    """PEM client certificate, for brokers that require mutual TLS (with ``ssl_keyfile``)."""
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    """Check that a broker's certificate names the host connected to. Leave on."""
    sasl_mechanism: SaslMechanism | None = None
    """With a ``SASL_*`` protocol: ``PLAIN`` (over TLS only, in practice) or ``SCRAM-SHA-256``
    / ``SCRAM-SHA-512``."""
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    """Best given as ``AUSM_KAFKA__SASL_PASSWORD`` (a Secret in the chart), not in a file."""
    replication_factor: int = 1
    """Copies of each partition the brokers keep, for the topics ausm-stream creates: 3 on a
    production cluster, so that a topic outlives a broker (the embedded broker is one node).
    Topics that already exist are left as they are."""
    topic_configs: dict[str, str] = field(default_factory=dict, hash=False)
    """Settings of the topics ausm-stream creates (``retention.ms``, ``min.insync.replicas``,
    ...), over ``max.message.bytes``, which follows ``max_message_bytes``."""
    delivery_timeout_s: float = 86400.0
    """How long a producer keeps retrying a record through a broker outage before it gives
    the record up (a day: outages are waited out). Order is kept (the producer is
    idempotent); what waits is bounded by the producer's buffer, and a full buffer makes
    ingest wait (back-pressure: a file pauses, a camera's session drops and is reconnected).
    A record given up is not lost: ingest starts again from what the topic holds, as after a
    crash, and a worker sends the tracks window again, checkpointing nothing past it
    meanwhile. Shorter timeouts risk a gap: records given up while later ones get through.
    At least the 30 s of one request."""

    def __post_init__(self) -> None:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if self.bootstrap == "embedded" and self.security_protocol != "PLAINTEXT":
            raise ConfigError(
                "kafka.security_protocol must be PLAINTEXT with the embedded broker (it listens "
                "on loopback without TLS or SASL); set kafka.bootstrap to your brokers"
            )
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ConfigError(
                f"kafka.security_protocol {self.security_protocol} needs kafka.sasl_mechanism, "
                "kafka.sasl_username and kafka.sasl_password (AUSM_KAFKA__SASL_PASSWORD)"
            )
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ConfigError(
                "kafka.sasl_* settings need kafka.security_protocol SASL_SSL or SASL_PLAINTEXT, "
                f"got {self.security_protocol}"
            )
        files = {
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        given = {k: v for k, v in files.items() if v is not None}
        if given and not tls:
            raise ConfigError(
                f"kafka.{next(iter(given))} needs kafka.security_protocol SSL or SASL_SSL, "
                f"got {self.security_protocol}"
            )
        if self.delivery_timeout_s < MIN_DELIVERY_TIMEOUT_S:
            raise ConfigError(
                f"kafka.delivery_timeout_s must be at least {MIN_DELIVERY_TIMEOUT_S} s (one "
                f"request's timeout and the producer's linger), got {self.delivery_timeout_s}"
            )
        if not isinstance(self.topic_configs, Mapping):
            raise ConfigError(
                f"kafka.topic_configs must be a mapping (setting: value), got "
                f"{self.topic_configs!r}"
            )
        for key, value in self.topic_configs.items():
            if not isinstance(key, str) or not isinstance(value, str | int | float):
                raise ConfigError(
                    f"kafka.topic_configs maps topic setting names to values, got {key!r}: "
                    f"{value!r}"
                )
        for key, path in given.items():
            if not Path(path).is_file():
                raise ConfigError(f"kafka.{key} {path!r} is not a file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("kafka.ssl_certfile and kafka.ssl_keyfile go together (mutual TLS)")

    def client_settings(self) -> dict[str, Any]:
        """The security settings as kafka-python's client arguments (every client gets them)."""
        settings: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.endswith("SSL"):
            settings.update(
                ssl_cafile=self.ssl_cafile,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
                ssl_check_hostname=self.ssl_check_hostname,
            )
        if self.security_protocol.startswith("SASL_"):
            settings.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return settings


@dataclass(frozen=True)
class StorageConfig:
    url: str = "file://./ausm-data"
    """``file:///path`` or ``s3://bucket/prefix``."""
    endpoint: str | None = None
    """S3/MinIO endpoint URL, e.g. ``http://127.0.0.1:9000`` (AWS when unset)."""
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"
    timeout_s: float = 10.0
    """Connect and read timeout of one S3 request. A store that stops answering (a
    black-holed endpoint) then costs a call this long, not the client's default of 300 s."""
    request_retries: int = 2
    """Times the S3 clients (minio's, pyarrow's) retry one request before it fails; the
    worker's own back-off (``retry_initial_s``) then takes over. minio's default is 5."""
    retry_initial_s: float = 0.5
    """After a store write or page-in fails, the first wait before it is tried again;
    each further failure doubles the wait, up to ``retry_max_s``. Nothing is dropped while
    the store is out: checkpoints, Parquet windows and records wait in memory."""
    retry_max_s: float = 15.0
    """The longest wait between two tries during a store outage (how late a worker notices
    that the store is back)."""

    def __post_init__(self) -> None:
        for key in ("timeout_s", "retry_initial_s", "retry_max_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"storage.{key} must be positive, got {getattr(self, key)}")
        if self.request_retries < 0:
            raise ConfigError(f"storage.request_retries must be >= 0, got {self.request_retries}")
        if self.retry_max_s < self.retry_initial_s:
            raise ConfigError(
                f"storage.retry_max_s ({self.retry_max_s}) must be at least "
                f"storage.retry_initial_s ({self.retry_initial_s})"
            )


@dataclass(frozen=True)
class RayConfig:
    address: str = "local"
    """``local`` starts Ray in this process; ``auto`` or ``ray://host:10001`` joins a cluster."""
    num_cpus: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    weights: str = "default"
    """Path of a ``.safetensors`` file, or ``default`` for the shipped shapes-tiny model."""
    seed: int = 0
    """Base seed of every stream's ID sampler (mixed with the stream id)."""


@dataclass(frozen=True)
class IngestConfig:
    chunk_frames: int = 8
    fps: float | None = None
    """Resample to this rate; ``None`` keeps the source's frames."""
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    reconnect_attempts: int = 0
    """Give up after this many failed reconnects in a row (0 = never)."""
    pace: bool = False
    """Produce a file at its own frame rate, as a camera would, instead of as fast as it
    decodes (demos, soak tests)."""
    fit: Fit = "letterbox"
    """How frames fit the model's square input: ``letterbox`` scales them by one factor and
    pads the rest with black bands that never produce tracks (shapes keep their
    proportions); ``stretch`` fills the input, squeezing shapes (``pipeline/geometry.py``)."""
    source_schemes: str = ",".join(NETWORK_SCHEMES)
    """URL schemes ``POST /streams`` accepts as sources, comma-separated (pipeline/sources.py)."""
    source_hosts: str | None = None
    """Hosts a source URL may name although they resolve to loopback, private or link-local
    addresses, which are refused otherwise (the server would fetch internal URLs for whoever
    holds the token): comma-separated host patterns (``*.cameras.local``) and networks
    (``10.20.0.0/16``, ``127.0.0.1``). Cameras usually sit on private networks: list them.
    Public addresses need no entry."""
    media_root: str | None = None
    """Directory under which ``POST /streams`` accepts local video files (links resolved);
    unset, the API opens no local file. ``ausm-stream ingest --source`` is not limited."""
    streams_per_process: int = 64
    """Streams one ingest process serves, each in a thread of its own (operators/
    ingest_pool.py): 200 cameras take 4 processes, not 200. Decoding runs outside Python's
    lock; a process of many high-resolution cameras wants the cores to match."""
    cpus_per_process: float = 0.0
    """CPUs each ingest process reserves (Ray's ``num_cpus``), so Ray places ingest where
    there is room beside the workers. 0 (the default) reserves none: a small box whose cores
    the workers reserve still ingests. The Helm chart reserves one per process."""

    def __post_init__(self) -> None:
        try:
            self.source_policy()
        except InvalidInputError as exc:
            raise ConfigError(str(exc)) from None
        if self.streams_per_process < 1:
            raise ConfigError(
                f"ingest.streams_per_process must be >= 1, got {self.streams_per_process}"
            )
        if self.cpus_per_process < 0:
            raise ConfigError(f"ingest.cpus_per_process must be >= 0, got {self.cpus_per_process}")

    def source_policy(self) -> SourcePolicy:
        return SourcePolicy.parse(self.source_schemes, self.source_hosts, self.media_root)


@dataclass(frozen=True)
class WorkerConfig:
    parquet_frames: int = 64
    """A stream's Parquet files cover this many frames (named by range, so replays overwrite)."""
    poll_ms: int = 200
    max_batch: int = 16
    cpus: int = 1
    """CPU cores each worker's Ray actor reserves. The model steps its streams in this many
    lanes, each on one torch thread (``AUSMConfig.step_lanes``). One core per worker is the
    default: lanes are threads that take turns on Python's GIL, so on a CPU a worker per core
    steps more frames than one worker with a lane per core (README, "Performance")."""
    device: Device = "auto"
    """Where each worker's model, stream states and tracker run. ``cuda`` needs a GPU the
    worker can see (``gpus`` > 0: Ray hides GPUs from actors that reserve none) and is an
    error without one; ``auto`` takes the GPU when one is visible, so with ``gpus: 0`` it is
    the CPU. On the CPU a replay reproduces a stream's bytes; on a GPU, kernels chosen by a
    batch's shape may change the last bits of a replayed window (README, "GPU workers")."""
    gpus: float = 0
    """GPUs each worker's Ray actor reserves (Ray's ``num_gpus``): 1 in production, one
    worker per GPU (the Helm chart sets it)."""
    autocast: Autocast = "off"
    """Run the network's step under ``torch.autocast`` in this dtype on CUDA (faster, less
    memory; outputs then differ from float32's, and replays are no more bit-identical than
    on a GPU without it). Off by default; ignored on the CPU."""
    scan_backend: ScanBackend = "auto"
    """The Mamba layers' scan (``AUSMConfig.scan_backend``): ``auto`` takes mamba-ssm's
    kernels on CUDA when the package is installed, ``torch`` always our scan, ``mamba_ssm``
    the kernels or an error. The choice is logged once with its reason."""
    batch_cells: int | None = None
    """Most 1/8-grid cells (streams x cells per stream) one network call steps; larger batches
    are split (``AUSMConfig.batch_cells``). Unset = the model's (four 128-pixel streams, the
    CPU's best); raise it on a GPU, where larger batches are cheaper per stream."""
    count: int = 0
    """Worker actors sharing the frames topic's partitions (contiguous ranges, one range
    each). 0 = as many as fit: the Ray cluster's CPUs // ``cpus`` (GPUs // ``gpus`` when
    ``gpus`` is set), at most one per partition."""
    checkpoint_frames: int | None = None
    """Checkpoint a stream each time it completes this many frames; unset = the Parquet
    window (``parquet_frames``), when the sinks hold nothing. Fewer frames mean shorter
    replays after a failure and more storage traffic (``bench/recovery.py`` measures both)."""
    checkpoint_seconds: float = 30.0
    """Also checkpoint every stream that progressed at least this often (slow streams)."""
    idle_page_out_s: float = 300.0
    """A stream with nothing queued and no record for this long leaves the worker's memory
    after a checkpoint; its next record pages it back in from that checkpoint."""
    checkpoints_kept: int = 3
    """Checkpoints kept per stream: a damaged newest one falls back to the one before."""
    max_restarts: int | None = None
    """Times Ray restarts a crashed worker (each restart recovers from the checkpoints);
    unset = always."""
    resident_streams: int | None = None
    """Most stream states a worker keeps live on its device (R); the least recently stepped
    others are paged to host memory, compressed (``operators/residency.py``). A batch holds
    at most R streams. Unset = every state stays resident."""
    host_state_bytes: int | None = None
    """Budget for the paged-out states in host memory (compressed bytes); beyond it the least
    recently stepped of those with nothing queued leave the worker after a checkpoint and
    come back from the object store at their next record. Unset = no limit."""
    state_dtype: StateDtype = "float16"
    """How streams' recurrent memory is stored between steps (``AUSMConfig.state_dtype``).
    float16 (the default) halves a stream's state at no measured cost in quality: on the
    ``test`` split the shipped model's J&F, AP and AP50 equal float32's to three decimals
    (README, "Many streams per worker"). float32 stores it exactly as computed."""
    lag_policy: LagPolicy = "process_all"
    """``process_all``: every frame is segmented, however far behind the worker falls.
    ``skip_to_live``: a stream more than ``max_lag_s`` behind its newest received frame skips
    its queued frames up to that newest one; they are recorded in the frames table as
    skipped, and its state continues from the next frame it steps."""
    max_queued_bytes: int = 64 * 2**20
    """Back-pressure (``process_all``): while the frames a worker has fetched and not yet
    segmented take this many bytes, it stops fetching; they wait in Kafka instead of in its
    memory. (``skip_to_live`` keeps fetching, to see the newest frames and skip to them.)"""
    max_lag_s: float = 10.0
    """How far (capture time) behind its newest received frame ``skip_to_live`` lets a stream
    fall before skipping."""
    preview_streams: int = 64
    """Streams whose latest segmented frame a worker keeps for ``GET /streams/{id}/preview.png``
    (the most recently stepped ones; a copy of one frame at the model's input size each, 48 KiB
    at 128x128). 0 keeps none."""
    heartbeat_timeout_s: float = 30.0
    """A worker whose loop has not pushed its heartbeat (its status, every second, from inside
    the step loop) for this long is stuck or gone: ``GET /healthz`` answers 503 naming it.
    Longer than the slowest step of a full batch, and than a restarted worker's recovery."""

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ConfigError(f"worker.gpus must be >= 0, got {self.gpus}")
        if self.device == "cuda" and self.gpus == 0:
            raise ConfigError(
                "worker.device is cuda but worker.gpus is 0: Ray shows no GPU to a worker that "
                "reserves none; set worker.gpus (1 = one worker per GPU)"
            )


@dataclass(frozen=True)
class ApiConfig:
    """The control plane (``ausm-stream serve``): a REST API on Ray Serve."""

    host: str = "127.0.0.1"
    """Address the HTTP server binds to: loopback unless told otherwise (``0.0.0.0`` in a pod)."""
    port: int = 8000
    """0 picks a free port (printed at start)."""
    token: str | None = field(default=None, repr=False)
    """Bearer token every route but ``/healthz`` requires (also ``AUSM_API__TOKEN``). Unset: a
    random token is made at start and printed, so an API is never open by accident."""
    metrics_token: str | None = field(default=None, repr=False)
    """A second token that opens ``GET /metrics`` and nothing else (also
    ``AUSM_API__METRICS_TOKEN``): what a metrics scraper holds, so that a leaked scraper
    configuration cannot add, prompt or remove streams. Unset: only ``api.token``."""
    max_body_bytes: int = 1 << 20
    """Largest request body the API takes (413 above it, before the body is read). 1 MiB
    holds a prompt of many objects; masks as COCO RLE are a few KiB each."""


@dataclass(frozen=True)
class PipelineConfig:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    api: ApiConfig = field(default_factory=ApiConfig)

    @classmethod
    def load(
        cls, path: str | Path | None = None, env: Mapping[str, str] | None = None
    ) -> PipelineConfig:
        """Defaults, then the YAML file (if any), then ``AUSM_SECTION__KEY`` variables."""
        data: dict[str, Any] = {}
        if path is not None:
            import yaml

            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file {str(path)!r} does not exist")
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {path} must be a mapping of sections")
            data = loaded
        env = os.environ if env is None else env
        for name, value in env.items():
            if not name.startswith(ENV_PREFIX) or "__" not in name:
                continue
            section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                raise ConfigError(f"config section {section!r} must be a mapping")
            data[section][key] = value
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; known: {sorted(sections)}")
        built = {}
        for name, f in sections.items():
            section_cls = f.default_factory  # type: ignore[misc]
            values = data.get(name) or {}
            if not isinstance(values, Mapping):
                raise ConfigError(f"config section {name!r} must be a mapping")
            built[name] = _build_section(name, section_cls, values)
        return cls(**built)


def _build_section(section: str, section_cls: type, values: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    hints = typing.get_type_hints(section_cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {[f'{section}.{k}' for k in unknown]}; known: {sorted(fields)}"
        )
    out = {k: _coerce(f"{section}.{k}", hints[k], v) for k, v in values.items()}
    for key in POSITIVE.get(section, ()):
        if out.get(key) == 0:
            real = float in (hints[key], *typing.get_args(hints[key]))
            rule = "positive" if real else "at least 1"
            raise ConfigError(
                f"config key {section}.{key} must be {rule}, got 0 "
                f"(leave it out for the default, {getattr(section_cls(), key)})"
            )
    for key, most in AT_MOST.get(section, {}).items():
        if out.get(key, 0) > most:
            raise ConfigError(
                f"config key {section}.{key} must be at most {most}, got {out[key]} "
                "(a worker refuses larger records: records.MAX_CHUNK_FRAMES)"
            )
    return section_cls(**out)


AT_MOST = {"ingest": {"chunk_frames": MAX_CHUNK_FRAMES}}
"""Keys bounded by what a record may hold: above it, every record would be refused."""

POSITIVE = {
    "kafka": ("partitions", "max_message_bytes", "fetch_max_wait_ms", "replication_factor"),
    "ingest": ("chunk_frames", "fps", "reconnect_initial_s", "reconnect_max_s"),
    "worker": (
        "checkpoint_seconds",
        "idle_page_out_s",
        "max_lag_s",
        "parquet_frames",
        "poll_ms",
        "max_batch",
        "cpus",
        "checkpoint_frames",
        "checkpoints_kept",
        "resident_streams",
        "host_state_bytes",
        "max_queued_bytes",
        "batch_cells",
        "heartbeat_timeout_s",
    ),
    "api": ("max_body_bytes",),
}
"""Keys for which 0 means nothing sensible (a division by zero, or a worker that never
steps): 0 is an error naming the key. Other numbers may be 0 (``worker.count: 0`` = as many
as fit, ``ingest.reconnect_attempts: 0`` = never give up, ``worker.gpus: 0`` = CPU workers,
the default); no number may be negative."""


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Check (and, for strings from the environment, convert) one value against its type."""
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"config key {key} must be one of {list(choices)}, got {value!r}")
        return value
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            number = int(value)
            if number < 0:
                raise ValueError(value)
            return number
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if not number >= 0:  # also refuses nan
                raise ValueError(value)
            return number
        if hint is str:
            if not isinstance(value, str) or not value:
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        kind = {
            bool: "a boolean",
            int: "a non-negative integer",
            float: "a non-negative number",
            str: "a non-empty string",
        }[hint]
        raise ConfigError(f"config key {key} must be {kind}, got {value!r}") from None
    return value
