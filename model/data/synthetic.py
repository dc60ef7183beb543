"""Deterministic synthetic videos: textured shapes moving over a textured, moving background.

What a tracker has to cope with is all here: several classes (circle, square, triangle,
ring — the ring has a hole the background shows through), per-object textures and colours,
rotation, bouncing off the borders, objects entering and leaving the frame, objects passing
in front of one another, and scripted full occlusions that hide a small object behind a
large one for several frames.

Videos are a pure function of (split, index): each split draws from its own
``numpy.random.SeedSequence`` namespace, so train, val and test never share a video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ausm_stream.errors import InvalidInputError
from ausm_stream.model.data.video import Video, layered_video

SPLITS = {"train": 101, "val": 202, "test": 303}
CLASS_NAMES = ("circle", "square", "triangle", "ring")


@dataclass(frozen=True)
class ShapesSpec:
    size: tuple[int, int] = (128, 128)
    frames: int = 24
    min_objects: int = 1
    max_objects: int = 4
    min_radius: float = 8.0
    max_radius: float = 20.0
    max_speed: float = 3.0
    enter_prob: float = 0.25
    """Chance that an object starts outside the frame and crosses it (no bouncing)."""
    occlusion_prob: float = 0.5
    """Chance that a video scripts a large object passing fully over a small one."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise InvalidInputError("ShapesSpec needs 1 <= min_objects <= max_objects")
        if self.frames < 1:
            raise InvalidInputError("ShapesSpec.frames must be >= 1")


@dataclass
class _Shape:
    cls: int
    radius: float
    pos: np.ndarray  # (x, y) at frame 0
    vel: np.ndarray
    angle: float
    spin: float
    bounce: bool
    colour: np.ndarray
    stripe_freq: float
    stripe_angle: float


def _rng(split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    return np.random.default_rng(np.random.SeedSequence([SPLITS[split], index]))


def _trajectory(shape: _Shape, frames: int, size: tuple[int, int]) -> np.ndarray:
    """Centre per frame (T, 2); bouncing shapes reflect off the borders."""
    h, w = size
    pos, vel = shape.pos.astype(float).copy(), shape.vel.astype(float).copy()
    out = np.zeros((frames, 2))
    for t in range(frames):
        out[t] = pos
        pos = pos + vel
        if shape.bounce:
            for axis, limit in ((0, w), (1, h)):
                if pos[axis] < shape.radius or pos[axis] > limit - shape.radius:
                    vel[axis] = -vel[axis]
                    pos[axis] = np.clip(pos[axis], shape.radius, limit - shape.radius)
    return out


def _shape_mask(
    cls: int, centre: np.ndarray, radius: float, angle: float, grid: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    xs, ys = grid
    dx, dy = xs - centre[0], ys - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    name = CLASS_NAMES[cls]
    if name == "circle":
        return dx * dx + dy * dy <= radius * radius
    if name == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= radius * radius) & (d2 >= (0.5 * radius) ** 2)
    if name == "square":
        half = radius * 0.85
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # Equilateral triangle: inside all three half-planes at distance radius/2 from the centre.
    inside = np.ones_like(xs, dtype=bool)
    for k in range(3):
        a = angle + k * 2 * math.pi / 3
        inside &= (math.cos(a) * dx + math.sin(a) * dy) <= radius * 0.5
    return inside


def _texture(shape: _Shape, grid: tuple[np.ndarray, np.ndarray], t: int) -> np.ndarray:
    xs, ys = grid
    phase = math.cos(shape.stripe_angle) * xs + math.sin(shape.stripe_angle) * ys
    stripes = 0.5 + 0.5 * np.sin(phase * shape.stripe_freq + 0.3 * t)
    return shape.colour[None, None, :] * (0.65 + 0.35 * stripes[..., None])


def _background(rng: np.random.Generator, size: tuple[int, int], frames: int) -> np.ndarray:
    """A smooth random texture that drifts: (T, H, W, 3) float in [0, 1]."""
    h, w = size
    pad = 2 * frames + 8
    base = np.zeros((h + pad, w + pad, 3))
    ys, xs = np.mgrid[0 : h + pad, 0 : w + pad].astype(float)
    for _ in range(4):
        f = rng.uniform(0.02, 0.12, size=2)
        ph = rng.uniform(0, 2 * math.pi)
        amp = rng.uniform(0.05, 0.15, size=3)
        base += amp * np.sin(f[0] * xs + f[1] * ys + ph)[..., None]
    base += rng.uniform(0.25, 0.6, size=3)
    base += rng.normal(0, 0.03, size=base.shape)
    drift = rng.uniform(-1.5, 1.5, size=2)
    out = np.empty((frames, h, w, 3))
    for t in range(frames):
        ox = round(pad / 2 + drift[0] * t) % pad
        oy = round(pad / 2 + drift[1] * t) % pad
        out[t] = base[oy : oy + h, ox : ox + w]
    return out


def _random_shape(rng: np.random.Generator, spec: ShapesSpec) -> _Shape:
    h, w = spec.size
    radius = rng.uniform(spec.min_radius, spec.max_radius)
    speed = rng.uniform(0.5, spec.max_speed)
    heading = rng.uniform(0, 2 * math.pi)
    vel = speed * np.array([math.cos(heading), math.sin(heading)])
    bounce = rng.random() >= spec.enter_prob
    if bounce:
        pos = np.array([rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)])
    else:  # start just outside a border, heading across the frame
        side = rng.integers(4)
        along = rng.uniform(0.2, 0.8)
        starts = [
            (-radius, along * h),
            (w + radius, along * h),
            (along * w, -radius),
            (along * w, h + radius),
        ]
        pos = np.array(starts[side])
        target = np.array([w / 2, h / 2]) + rng.uniform(-0.2, 0.2, 2) * np.array([w, h])
        vel = (target - pos) / np.linalg.norm(target - pos) * max(speed, 1.5)
    return _Shape(
        cls=int(rng.integers(len(CLASS_NAMES))),
        radius=radius,
        pos=pos,
        vel=vel,
        angle=rng.uniform(0, 2 * math.pi),
        spin=rng.uniform(-0.08, 0.08),
        bounce=bounce,
        colour=rng.uniform(0.05, 1.0, size=3),
        stripe_freq=rng.uniform(0.2, 0.8),
        stripe_angle=rng.uniform(0, math.pi),
    )


def _script_occlusion(rng: np.random.Generator, spec: ShapesSpec, shapes: list[_Shape]) -> None:
    """Make a large shape pass in front of a small, slow one around a mid-video frame."""
    if spec.frames < 12:
        return
    h, w = spec.size
    victim = _Shape(**{**shapes[0].__dict__})
    victim.radius = spec.min_radius
    victim.cls = int(rng.choice([0, 1]))  # compact shapes a disc can cover completely
    victim.vel = rng.uniform(-0.5, 0.5, size=2)
    victim.bounce = True
    victim.pos = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h])
    t_mid = int(rng.integers(5, spec.frames - 6))
    centre = _trajectory(victim, spec.frames, spec.size)[t_mid]
    heading = rng.uniform(0, 2 * math.pi)
    occluder = _random_shape(rng, spec)
    occluder.cls = 0  # a disc, so that coverage does not depend on rotation
    occluder.radius = max(spec.max_radius, 2.6 * victim.radius)
    occluder.vel = rng.uniform(4.5, 7.0) * np.array([math.cos(heading), math.sin(heading)])
    occluder.pos = centre - occluder.vel * t_mid
    occluder.bounce = False
    shapes[0] = victim
    shapes.append(occluder)  # drawn last: in front


def generate_video(split: str, index: int, spec: ShapesSpec | None = None) -> Video:
    """Video ``index`` of ``split``; the same arguments always give the same pixels."""
    spec = spec or ShapesSpec()
    rng = _rng(split, index)
    h, w = spec.size
    count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    shapes = [_random_shape(rng, spec) for _ in range(count)]
    if rng.random() < spec.occlusion_prob:
        _script_occlusion(rng, spec, shapes)
    frames = _background(rng, spec.size, spec.frames)
    grid = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    full = np.zeros((spec.frames, len(shapes), h, w), dtype=bool)
    paths = [_trajectory(s, spec.frames, spec.size) for s in shapes]
    for t in range(spec.frames):
        for k, s in enumerate(shapes):  # back to front
            m = _shape_mask(s.cls, paths[k][t], s.radius, s.angle + s.spin * t, grid)
            full[t, k] = m
            frames[t][m] = _texture(s, grid, t)[m]
    noise = rng.normal(0, 0.01, size=frames.shape)
    pixels = np.clip((frames + noise) * 255, 0, 255).astype(np.uint8)
    classes = np.array([s.cls for s in shapes], dtype=np.int64)
    return layered_video(f"{split}-{index:06d}", pixels, full, classes, CLASS_NAMES)


def split_videos(split: str, count: int, spec: ShapesSpec | None = None) -> list[Video]:
    return [generate_video(split, i, spec) for i in range(count)]
