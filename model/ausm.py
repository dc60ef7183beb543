"""The public model API: ``init_state`` -> ``add_prompt`` -> ``step``, plus teacher forcing.

The model holds no per-stream data: every stream's memory is a :class:`StreamState` the
caller owns, passes in and may serialise between frames, so one model serves many streams
and ``step`` batches any set of them::

    cfg = AUSMConfig.preset("tiny")
    model = AUSM(cfg).eval()
    state = model.init_state(seed=7)
    model.add_prompt(state, masks, object_ids)       # optional, at any frame
    results = model.step([state], frames)            # frames (N, H, W, 3) uint8
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ausm_stream.errors import InvalidInputError
from ausm_stream.model import versions
from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.device import resolve_device
from ausm_stream.model.mamba import MambaState
from ausm_stream.model.memory import receive_labels, remember_frame, stream_memory
from ausm_stream.model.network import AUSMNet, NetOutputs, RecurrentTensors
from ausm_stream.model.prompts import prompt_problem
from ausm_stream.model.state import StreamState, empty_state_tensors, state_torch_dtype
from ausm_stream.model.tracking import StepResult, update_batch, update_stream


class AUSM(nn.Module):
    def __init__(self, cfg: AUSMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = AUSMNet(cfg)
        self._lane_pool: ThreadPoolExecutor | None = None

    @property
    def device(self) -> torch.device:
        return self.net.x_init.device

    # -- streams ---------------------------------------------------------------------------
    def init_state(self, seed: int = 0) -> StreamState:
        """A fresh stream. ``seed`` keys the ID sampler: same seed and input, same tracks."""
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InvalidInputError(f"seed must be an int, got {type(seed).__name__}")
        tensors = empty_state_tensors(self.cfg)
        with torch.no_grad():
            recurrent = self.net.initial_recurrent(1)
        tensors["x_prev"] = recurrent.x_prev[0].cpu().to(state_torch_dtype(self.cfg))
        state = StreamState(
            arch=self.cfg.arch_fingerprint(),
            **tensors,
            seed=seed,
            frames_seen=0,
            alloc_count=0,
            next_track_id=1,
        )
        return state.to(self.device)

    def add_prompt(
        self, state: StreamState, masks: Tensor | np.ndarray, object_ids: Iterable[int]
    ) -> None:
        """Queue objects to track from the next ``step`` of this stream on.

        masks (K, H, W) bool at the model's input size, for the frame the next ``step``
        receives; object_ids are the caller's non-negative ids. A known id replaces that
        object's mask. When the ID buffer is full, prompts displace unprompted tracks.
        Boxes and points become masks with :mod:`ausm_stream.model.prompts`.
        """
        self._check_state(state)
        masks_t = torch.as_tensor(masks)
        ids = [int(i) for i in object_ids]
        problem = prompt_problem(masks_t, ids, self.cfg.image_size, self.cfg.n_id)
        if problem is not None:
            raise InvalidInputError(problem)

        pending = state.pending_object_id.tolist()
        prompted = {i for i in state.slot_object_id[state.slot_active].tolist() if i >= 0}
        wanted = prompted | {i for i in pending if i >= 0} | set(ids)
        if len(wanted) > self.cfg.n_id:
            raise InvalidInputError(
                f"{len(wanted)} prompted objects would exceed the ID buffer of "
                f"{self.cfg.n_id} (AUSMConfig.n_id); prompted objects can only displace "
                "unprompted tracks"
            )
        for object_id, mask in zip(ids, masks_t.to(state.device), strict=True):
            slot = pending.index(object_id) if object_id in pending else pending.index(-1)
            pending[slot] = object_id
            state.pending_object_id[slot] = object_id
            state.pending_masks[slot] = mask

    @torch.no_grad()
    def step(self, states: list[StreamState], frames: Tensor | np.ndarray) -> list[StepResult]:
        """Advance N streams by one frame each, as one batch; ``states`` are updated in place."""
        if not isinstance(states, list | tuple) or not states:
            raise InvalidInputError("states must be a non-empty list of StreamState")
        for s in states:
            self._check_state(s)
        frames_t = self._check_frames(frames, expected_ndim=4)
        if frames_t.shape[0] != len(states):
            raise InvalidInputError(f"{frames_t.shape[0]} frames for {len(states)} states")
        groups = self._micro_batches(len(states))

        def run(group: slice) -> list[StepResult]:
            return self._step_group(list(states[group]), frames_t[group])

        serial = len(groups) == 1 or self.cfg.step_lanes == 1
        parts = map(run, groups) if serial else self._lanes().map(run, groups)
        return [r for part in parts for r in part]

    def warm_up(self, streams: int = 1) -> None:
        """One throwaway step of ``streams`` empty streams: the first step of a process builds
        kernels and lane threads (~0.3 s on a CPU), which should not fall on a live frame."""
        h, w = self.cfg.image_size
        frames = torch.zeros(streams, h, w, 3, dtype=torch.uint8)
        self.step([self.init_state() for _ in range(streams)], frames)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """``cfg.autocast`` on CUDA (the tracker after it runs in float32 either way)."""
        if self.cfg.autocast == "off" or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=getattr(torch, self.cfg.autocast))

    def _micro_batches(self, n: int) -> list[slice]:
        """Split a batch so each group holds at most ``batch_cells`` grid cells, and so every
        lane gets a group.

        On a CPU the step is bound by memory traffic over the recurrent state; past a few
        streams a bigger batch falls out of cache and gets slower, not faster. The split never
        changes a result: a stream's output does not depend on its batch mates.
        """
        h, w = self.cfg.history_grid_size
        size = max(1, min(self.cfg.batch_cells // (h * w), -(-n // self.cfg.step_lanes)))
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def _lanes(self) -> ThreadPoolExecutor:
        if self._lane_pool is None:
            self._lane_pool = ThreadPoolExecutor(self.cfg.step_lanes, "ausm-lane")
        return self._lane_pool

    @torch.no_grad()  # grad mode is per thread: lanes need it too
    def _step_group(self, states: list[StreamState], frames: Tensor) -> list[StepResult]:
        for s in states:
            receive_labels(s)
        # Which streams take a prompt at this frame, kept on the device (remember_frame).
        prompted = (torch.stack([s.pending_object_id for s in states]) >= 0).any(1)
        with self._autocast():
            outputs, recurrent = self.net.step(
                frames,
                torch.stack([s.slot_active for s in states]),
                torch.stack([s.slot_masks for s in states]),
                _stack_recurrent(states),
                memory=stream_memory(states),
            )
        _unstack_recurrent(recurrent, states, state_torch_dtype(self.cfg))
        looks = outputs.look_features  # the backbone's, for feature looks (cfg.look)
        if looks is not None and not looks.shape[1]:
            looks = None
        if self.cfg.tracker == "batched":
            results = update_batch(
                self.cfg,
                states,
                outputs.class_logits,
                outputs.mask_logits,
                frames,
                looks,
                outputs.propagated,
            )
        else:
            results = [
                update_stream(
                    self.cfg,
                    s,
                    outputs.class_logits[i],
                    outputs.mask_logits[i],
                    frames[i],
                    None if looks is None else looks[i],
                    None if outputs.propagated is None else outputs.propagated[i],
                )
                for i, s in enumerate(states)
            ]
        if looks is not None:
            for s, look, was_prompted in zip(states, looks, prompted, strict=True):
                remember_frame(s, look, was_prompted)
        return results

    def iter_video(
        self,
        frames: Iterable[Tensor | np.ndarray],
        state: StreamState | None = None,
        prompts: dict[int, tuple[Tensor, list[int]]] | None = None,
    ) -> Iterator[StepResult]:
        """Segment one video lazily, frame by frame, holding only the fixed-size state.

        ``prompts`` maps a frame index to (masks, object_ids) applied at that frame.
        """
        state = state if state is not None else self.init_state()
        prompts = prompts or {}
        for frame in frames:
            if state.frames_seen in prompts:
                self.add_prompt(state, *prompts[state.frames_seen])
            yield self.step([state], torch.as_tensor(frame)[None])[0]

    def segment_clip(
        self,
        frames: Tensor | np.ndarray,
        state: StreamState | None = None,
        prompts: dict[int, tuple[Tensor, list[int]]] | None = None,
    ) -> list[StepResult]:
        """Segment a whole clip (T, H, W, 3) offline: one result per frame, in order.

        ``prompts`` as in :meth:`iter_video`. With ``cfg.test_time_repetition`` the frames
        run 0..T-1, T-2..0, 0..T-1 through one state (prompts on the first pass) and the last
        pass is returned, its ``frame_index`` counted as in the first.
        """
        clip = torch.as_tensor(frames)
        state = state if state is not None else self.init_state()
        first = list(self.iter_video(clip, state, prompts))
        if not self.cfg.test_time_repetition or len(first) < 2:
            return first
        for i in range(len(clip) - 2, -1, -1):  # backward: only the state matters
            self.step([state], clip[i : i + 1])
        return [
            dataclasses.replace(self.step([state], clip[i : i + 1])[0], frame_index=f.frame_index)
            for i, f in enumerate(first)
        ]

    # -- training --------------------------------------------------------------------------
    def forward_parallel(
        self, frames: Tensor, history_masks: Tensor, history_active: Tensor
    ) -> NetOutputs:
        """Teacher-forced forward over whole clips (MODEL.md section 5).

        frames (B, T, H, W, 3) uint8; history_masks (B, T, N_id, H, W) and history_active
        (B, T, N_id) bool: the masks and ID slots fed in at step t, i.e. M_{t-1} and A_{t-1}
        (all empty at t = 0 for an unprompted clip). Outputs are indexed (B, T, query, ...),
        ID slots first, then the detection queries.
        """
        frames_t = self._check_frames(frames, expected_ndim=5)
        b, t = frames_t.shape[:2]
        n, (h, w) = self.cfg.n_id, self.cfg.image_size
        history_masks = torch.as_tensor(history_masks, device=self.device)
        history_active = torch.as_tensor(history_active, device=self.device)
        if tuple(history_masks.shape) != (b, t, n, h, w):
            raise InvalidInputError(
                f"history_masks must be {(b, t, n, h, w)}, got {tuple(history_masks.shape)}"
            )
        if tuple(history_active.shape) != (b, t, n) or history_active.dtype != torch.bool:
            raise InvalidInputError(
                f"history_active must be bool {(b, t, n)}, got "
                f"{history_active.dtype} {tuple(history_active.shape)}"
            )
        return self.net.forward_parallel(frames_t, history_masks, history_active)

    # -- weights ---------------------------------------------------------------------------
    def packaged_keys(self) -> set[str]:
        """Weights read from an installed package (a frozen pretrained backbone, checked by
        its sha256 when the model is built): left out of weights files."""
        prefix = self.net.backbone.packaged_prefix
        if prefix is None:
            return set()
        return {k for k in self.state_dict() if k.startswith(f"net.backbone.{prefix}")}

    def save_weights(self, path: str | Path, extra: dict[str, str] | None = None) -> None:
        """safetensors weights with the config inside, so a file (and the installed packages
        that :meth:`packaged_keys` come from) is enough to rebuild."""
        metadata = {
            "format": versions.WEIGHTS_FORMAT,
            "config": self.cfg.to_json(),
            **(extra or {}),
        }
        packaged = self.packaged_keys()
        tensors = {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if k not in packaged
        }
        save_file(tensors, str(path), metadata=metadata)

    read_metadata = staticmethod(versions.read_metadata)
    read_config = staticmethod(versions.read_config)

    @classmethod
    def from_weights(cls, path: str | Path, **runtime: object) -> AUSM:
        """Load weights written by :meth:`save_weights`; ``runtime`` overrides thresholds etc."""
        cfg = dataclasses.replace(cls.read_config(path), **runtime)
        model = cls(cfg)
        load_matching(
            model, load_file(str(path)), f"weights file {str(path)!r}", model.packaged_keys()
        )
        return model.eval()

    @classmethod
    def calibrate(cls, path: str | Path, out: str | Path, **runtime: object) -> AUSMConfig:
        """Copy a weights file with new default runtime settings (thresholds tuned for these
        weights); its other metadata is kept. Returns the stored config."""
        extra = {k: v for k, v in cls.read_metadata(path).items() if k not in ("format", "config")}
        model = cls.from_weights(path, **runtime)
        model.save_weights(out, extra=extra)
        return model.cfg

    # -- validation ------------------------------------------------------------------------
    def _check_state(self, state: StreamState) -> None:
        if not isinstance(state, StreamState):
            raise InvalidInputError(f"expected a StreamState, got {type(state).__name__}")
        if state.arch != self.cfg.arch_fingerprint():
            raise InvalidInputError(
                f"state was made for another model config (arch {state.arch}, this model "
                f"{self.cfg.arch_fingerprint()})"
            )

    def _check_frames(self, frames: Tensor | np.ndarray, expected_ndim: int) -> Tensor:
        frames_t = torch.as_tensor(frames)
        h, w = self.cfg.image_size
        lead = "N" if expected_ndim == 4 else "B, T"
        if frames_t.dtype != torch.uint8:
            raise InvalidInputError(f"frames must be uint8 RGB, got {frames_t.dtype}")
        if frames_t.ndim != expected_ndim or tuple(frames_t.shape[-3:]) != (h, w, 3):
            raise InvalidInputError(
                f"frames must be ({lead}, {h}, {w}, 3) uint8 at the model's input size, got "
                f"{tuple(frames_t.shape)}; resize them first (the pipeline's ingest does)"
            )
        return frames_t.to(self.device)


def load_matching(
    module: torch.nn.Module,
    tensors: dict[str, Tensor],
    source: str,
    packaged: Collection[str] = (),
) -> None:
    """``load_state_dict`` that, on weights of another architecture, names what differs
    (missing, unexpected and misshaped tensors) instead of torch's raw ``RuntimeError``.
    ``packaged`` keys may be missing: the module already holds them from their package."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors) - set(packaged))
    unexpected = sorted(set(tensors) - set(own))
    misshaped = [
        f"{k} {tuple(tensors[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        for k in sorted(set(own) & set(tensors))
        if tensors[k].shape != own[k].shape
    ]
    if missing or unexpected or misshaped:
        parts = [
            f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shapes differ", misshaped),
            )
            if items
        ]
        raise InvalidInputError(
            f"{source} holds weights of another architecture than its config describes "
            f"({'; '.join(parts)}); use the config the weights were trained with"
        )
    module.load_state_dict(tensors, strict=not packaged)


def _stack_recurrent(states: list[StreamState]) -> RecurrentTensors:
    """Per compressor layer, the streams' Mamba states as one float32 batch (one copy)."""
    layers = range(states[0].conv.shape[0])
    f32 = torch.float32
    return RecurrentTensors(
        x_prev=torch.stack([s.x_prev for s in states]).to(f32),
        mamba=[
            MambaState(
                torch.cat([s.conv[i] for s in states]).to(f32),
                torch.cat([s.ssm[i] for s in states]).to(f32),
            )
            for i in layers
        ],
    )


def _unstack_recurrent(
    rec: RecurrentTensors, states: list[StreamState], dtype: torch.dtype
) -> None:
    """Back into each stream's own tensors, rounded to the state dtype (one copy: a stream
    never aliases its batch)."""
    n = len(states)
    conv = [m.conv.unflatten(0, (n, -1)) for m in rec.mamba]
    ssm = [m.ssm.unflatten(0, (n, -1)) for m in rec.mamba]
    for i, s in enumerate(states):
        s.x_prev = rec.x_prev[i].to(dtype, copy=True)
        s.conv = torch.stack([c[i] for c in conv]).to(dtype)
        s.ssm = torch.stack([m[i] for m in ssm]).to(dtype)


def load_model(weights: str, device: str = "cpu", **runtime: object) -> tuple[AUSM, str]:
    """The model that a ``model.weights`` setting names (``default`` or a path), on
    ``device`` (``cpu``, ``cuda`` or ``auto``: :func:`~.device.resolve_device`), and its
    version (:func:`~.versions.version_of`); ``runtime`` overrides runtime config fields."""
    path = versions.weights_path(weights)
    model = AUSM.from_weights(path, **runtime).to(resolve_device(device))
    return model, versions.version_of(path)
