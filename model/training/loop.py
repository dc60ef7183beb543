"""The training loop: AdamW, warm-up + cosine schedule, clipping, checkpoints, resume.

Everything is seeded: clip ``i`` of iteration ``n`` and its teacher-forcing draws are pure
functions of (seed, n, i), so a run resumed from a checkpoint continues exactly as the
uninterrupted run would have. Checkpoints are safetensors (weights, AdamW moments and the
iteration in the metadata), written atomically so a kill mid-write leaves the previous one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ausm_stream.errors import InvalidInputError
from ausm_stream.model.ausm import AUSM, load_matching
from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.data.sources import ClipSource, build_source
from ausm_stream.model.device import resolve_device
from ausm_stream.model.marker import masks_to_grid
from ausm_stream.model.memory import Memory, clip_memory
from ausm_stream.model.network import NetOutputs
from ausm_stream.model.pixel_decoder import QueryPredictions
from ausm_stream.model.training.objective import clip_loss
from ausm_stream.model.training.self_history import own_histories
from ausm_stream.model.training.teacher import MASK_STRIDES, ClipBatch, make_batch

CHECKPOINT_FORMAT = "ausm-stream-train-checkpoint"


@dataclass(frozen=True)
class TrainConfig:
    """What ``ausm-stream train --config file.yaml`` reads; unknown keys are errors."""

    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    """``preset`` plus any AUSMConfig field overrides."""
    data: dict[str, Any] = field(default_factory=lambda: {"kind": "synthetic"})
    """``kind: synthetic | davis | ytvis`` and that source's options (see data/sources.py)."""
    clip_frames: int = 8
    batch_size: int = 2
    iterations: int = 3000
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    mode: Literal["parallel", "iterative"] = "parallel"
    out_dir: str = "runs/train"
    time_limit_minutes: float | None = None
    """Stop cleanly (checkpoint + weights) after this long, whatever ``iterations`` says."""
    stop_after: int | None = None
    """End at this iteration, keeping the learning-rate schedule of ``iterations``: a stage
    cut short, reproducibly."""
    init_weights: str | None = None
    """Start from these weights (a later stage of a recipe); the optimizer starts fresh."""
    history_noise: float = 0.0
    """Chance that a tracked instance's history mask is degraded like a prediction (see
    training/teacher.py), so the model learns to recover from its own mistakes."""

    history_drop: float = 0.0
    """Chance that a tracked instance loses its history for a few frames and is then a
    detection target too (training/teacher.py), so detection queries learn to claim an
    object whose track lost it."""

    self_history: float = 0.0
    """Chance that an iteration's clips get their tracked histories from the model's own
    predictions instead of the ground truth (training/self_history.py)."""
    self_history_rounds: int = 2
    """How many steps deep the model's own errors compound in those histories."""

    mask_stride: int = 4
    """Resolution of the mask loss (1, 2 or 4 = 1/4 of the input, where the logits live).
    Below 4 the logits are upsampled as inference does and compared with finer targets,
    which sharpens boundaries (see training/objective.py)."""

    def __post_init__(self) -> None:
        for name in ("clip_frames", "batch_size", "iterations", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"train config: {name} must be >= 1")
        if self.mode not in ("parallel", "iterative"):
            raise InvalidInputError(
                f"train config: mode must be parallel or iterative, got {self.mode!r}"
            )
        if self.stop_after is not None and not 1 <= self.stop_after <= self.iterations:
            raise InvalidInputError("train config: stop_after must lie in [1, iterations]")
        if self.mask_stride not in MASK_STRIDES:
            raise InvalidInputError(f"train config: mask_stride must be one of {MASK_STRIDES}")
        if not 0.0 <= self.history_noise <= 1.0:
            raise InvalidInputError("train config: history_noise must lie in [0, 1]")
        if not 0.0 <= self.history_drop <= 1.0:
            raise InvalidInputError("train config: history_drop must lie in [0, 1]")
        if not 0.0 <= self.self_history <= 1.0:
            raise InvalidInputError("train config: self_history must lie in [0, 1]")
        if self.self_history_rounds < 1:
            raise InvalidInputError("train config: self_history_rounds must be >= 1")
        if "preset" not in self.model:
            raise InvalidInputError("train config: model.preset is required (tiny or paper)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(
                f"train config: unknown key(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"train config {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise InvalidInputError(f"train config {path} must be a mapping")
        return cls.from_dict(data)

    def model_config(self) -> AUSMConfig:
        overrides = {k: v for k, v in self.model.items() if k != "preset"}
        return AUSMConfig.preset(self.model["preset"], **overrides)


def forward_iterative(model: AUSM, batch: ClipBatch) -> NetOutputs:
    """Frame-by-frame recurrent forward with the same teacher-forced history (for comparison)."""
    net = model.net
    b, t_len = batch.frames.shape[:2]
    rec = net.initial_recurrent(b)
    memory = None
    if net.readout is not None:  # each step's memory, as the parallel pass builds it
        with torch.no_grad():
            _, _, looks = net.backbone(net.backbone.normalise(batch.frames.flatten(0, 1)))
        memory = clip_memory(
            looks.unflatten(0, (b, t_len)),
            batch.history_masks,
            batch.history_active,
            model.cfg.memory_frames,
        )
    outs = []
    for t in range(t_len):
        rows = torch.arange(b) * t_len + t
        out, rec = net.step(
            batch.frames[:, t],
            batch.history_active[:, t],
            masks_to_grid(batch.history_masks[:, t]),
            rec,
            batch_invariant=False,
            memory=None
            if memory is None
            else Memory(memory.features[rows], memory.labels[rows], memory.valid[rows]),
        )
        outs.append(out)

    def stack(get: Callable[[NetOutputs], QueryPredictions]) -> QueryPredictions:
        preds = [get(o) for o in outs]
        return QueryPredictions(
            torch.stack([p.class_logits for p in preds], 1),
            torch.stack([p.mask_logits for p in preds], 1),
        )

    final = stack(lambda o: QueryPredictions(o.class_logits, o.mask_logits))
    aux = [stack(lambda o, i=i: o.aux[i]) for i in range(len(outs[0].aux))]
    return NetOutputs(final.class_logits, final.mask_logits, aux)


def learning_rate(cfg: TrainConfig, it: int) -> float:
    if it < cfg.warmup:
        return cfg.lr * (it + 1) / cfg.warmup
    progress = (it - cfg.warmup) / max(1, cfg.iterations - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_step(
    model: AUSM, opt: torch.optim.Optimizer, cfg: TrainConfig, source: ClipSource, it: int
) -> dict[str, float]:
    videos = source.clips(it, cfg.batch_size, cfg.clip_frames)
    rng = np.random.default_rng([cfg.seed, it])
    batch = make_batch(videos, model.cfg, rng, cfg.history_noise, cfg.mask_stride, cfg.history_drop)
    batch = batch.to(model.device)
    # Drawn from its own stream so that the teacher's draws stay those of a run without it.
    if cfg.self_history and np.random.default_rng([cfg.seed, it, 1]).random() < cfg.self_history:
        batch = own_histories(model, batch, cfg.self_history_rounds)
    for group in opt.param_groups:
        group["lr"] = learning_rate(cfg, it)
    if cfg.mode == "parallel":
        out = model.forward_parallel(batch.frames, batch.history_masks, batch.history_active)
    else:
        out = forward_iterative(model, batch)
    loss, logs = clip_loss(out, batch, model.cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return {
        "loss": float(loss.detach()),
        **logs,
        "grad_norm": float(grad_norm),
        "lr": learning_rate(cfg, it),
    }


def make_optimizer(model: AUSM, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trained parameters (a frozen pretrained backbone has none)."""
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if p.ndim >= 2 and "A_log" not in n]
    no_decay = [p for n, p in trained if p.ndim < 2 or "A_log" in n]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )


def save_checkpoint(
    path: Path, model: AUSM, opt: torch.optim.Optimizer, cfg: TrainConfig, iteration: int
) -> None:
    packaged = model.packaged_keys()  # read again from their package on resume
    tensors = {
        f"model/{k}": v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if k not in packaged
    }
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim/{i}/{key}"] = torch.as_tensor(value).cpu().contiguous()
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "iteration": str(iteration),
        "train_config": json.dumps(dataclasses.asdict(cfg)),
        "model_config": model.cfg.to_json(),
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: AUSM, opt: torch.optim.Optimizer) -> int:
    """Restore weights and AdamW moments; returns the iteration to continue from."""
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise InvalidInputError(f"{path} is not a training checkpoint")
        if (
            AUSMConfig.from_dict(json.loads(meta["model_config"])).arch_fingerprint()
            != model.cfg.arch_fingerprint()
        ):
            raise InvalidInputError(f"checkpoint {path} was written for another model config")
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open API)
    load_matching(
        model,
        {k[6:]: v for k, v in tensors.items() if k.startswith("model/")},
        f"checkpoint {str(path)!r}",
        model.packaged_keys(),
    )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    opt_state = opt.state_dict()
    opt_state["state"] = state
    opt.load_state_dict(opt_state)
    return int(meta["iteration"])


def load_initial_weights(model: AUSM, path: str) -> None:
    """Weights from ``save_weights`` of a model with the same architecture, at any input size:
    no weight depends on it (positions are normalised), so a recipe may train its first
    stage on smaller frames, where an iteration costs a fraction, and finish at full size.
    Weights trained without a propagation memory may start a model with one
    (``memory_frames``): its readout starts from its initial gains."""
    theirs = AUSM.read_config(path)
    adds_memory = theirs.memory_frames == 0 and model.cfg.memory_frames > 0
    theirs = dataclasses.replace(
        theirs,
        image_size=model.cfg.image_size,
        memory_frames=model.cfg.memory_frames if adds_memory else theirs.memory_frames,
    )
    if theirs.arch_fingerprint() != model.cfg.arch_fingerprint():
        raise InvalidInputError(
            f"init_weights {path!r} were trained for another architecture than this config's"
        )
    new = {k for k in model.state_dict() if k.startswith("net.readout.")} if adds_memory else set()
    load_matching(model, load_file(path), f"init_weights {path!r}", model.packaged_keys() | new)


def train(
    cfg: TrainConfig, resume: bool = False, progress: bool = True, device: str = "cpu"
) -> Path:
    """Run (or continue) training on ``device`` (``cpu``, ``cuda`` or ``auto``); returns the
    path of the final weights. A run is reproducible on one device and build; a checkpoint
    resumes on any device."""
    where = resolve_device(device)  # before anything is written: a missing GPU is an error
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = AUSM(cfg.model_config()).train().to(where)
    opt = make_optimizer(model, cfg)
    source = build_source(cfg.data, model.cfg)
    ckpt = out / "checkpoint.safetensors"
    start = 0
    if resume:
        if not ckpt.is_file():
            raise InvalidInputError(f"--resume: no checkpoint at {ckpt}")
        start = load_checkpoint(ckpt, model, opt)
    elif cfg.init_weights:
        load_initial_weights(model, cfg.init_weights)
    end = cfg.stop_after or cfg.iterations
    log_path = out / "train_log.jsonl"
    began = time.monotonic()
    bar = tqdm(
        range(start, end),
        initial=start,
        total=end,
        desc="train",
        unit="it",
        disable=not progress,
        dynamic_ncols=True,
    )
    it = start
    with log_path.open("a") as log:
        for it in bar:
            logs = train_step(model, opt, cfg, source, it)
            bar.set_postfix(
                loss=f"{logs['loss']:.3f}", cls=f"{logs['cls']:.3f}", mask=f"{logs['mask']:.3f}"
            )
            log.write(
                json.dumps(
                    {
                        "iteration": it,
                        "time_s": round(time.monotonic() - began, 2),
                        **{k: round(v, 5) for k, v in logs.items()},
                    }
                )
                + "\n"
            )
            done = it + 1
            over_time = (
                cfg.time_limit_minutes is not None
                and time.monotonic() - began > 60 * cfg.time_limit_minutes
            )
            if done % cfg.checkpoint_every == 0 or done == end or over_time:
                save_checkpoint(ckpt, model, opt, cfg, done)
                log.flush()
            if over_time:
                break
    bar.close()
    weights = out / "model.safetensors"
    model.eval().save_weights(weights, extra={"trained_iterations": str(it + 1)})
    return weights
