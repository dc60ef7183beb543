"""Deterministic training videos made of real imagery: real objects over real backgrounds.

Shapes teach a tracker to follow a colour; real footage needs real texture. Each video here
shows what a fixed or moving camera sees:

- a backdrop: a crop of a real picture or frames of a real clip (:mod:`.imagery`), held still
  or panned and zoomed slowly, with hand-held jitter on some videos;
- 1..max_objects objects with real textures and real boundaries: regions of a real picture
  grown over its superpixels (so they end at the picture's own edges), smooth blobs filled
  with a real texture, or (``cutout_prob``) real people, animals, vehicles and things cut out
  of their photographs with their own silhouettes, upright and mirrored at random; edges are
  feathered (anti-aliased alpha), not binary cut-outs;
- motion: curving paths with speed changes, approach and recession (scale), slow rotation,
  objects entering and leaving the frame, objects passing in front of one another, and a
  scripted full occlusion on some videos;
- a camera that carries the objects with the backdrop when it pans, zooms or shakes (an
  object at rest stays put on the scene), soft shadows on some objects, and per-video
  brightness, contrast, colour cast, lighting drift, light blur and sensor noise.

``masks[t, k]`` is where object k's alpha is at least one half and no object in front of it
covers the pixel by at least one half: exactly what is drawn. There is one class,
``"object"``.

A video is a pure function of (split, index, spec): a ``numpy.random.SeedSequence`` per split
decides a :class:`Scene` (every choice, up front), and :func:`render_scene` draws it. Val and
test videos are built only from val and test pictures (see :mod:`.imagery`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps
from scipy import ndimage

from ausm_stream.errors import InvalidInputError
from ausm_stream.model.data import imagery
from ausm_stream.model.data.synthetic import SPLITS
from ausm_stream.model.data.video import Video, layered_video

CLASS_NAMES = ("object",)
_STREAM = 0x5EA1
"""Seed namespace that keeps these videos apart from the shapes generator's."""
_JITTER_MARGIN = 4.0
"""Source pixels kept free around the camera window so jitter never leaves the picture."""
_REGION_TRIES = 4
"""Regions grown per object cut; the one that stands out most from its surroundings wins."""
_TEXTURE_TRIES = 3
"""Crops tried per blob texture; the busiest wins."""
_FEATHER = 1.0
"""Gaussian sigma (sprite pixels) of the alpha ramp along an object's boundary."""
_NOISE_SLACK = 64
"""How far (pixels) each frame's window into the shared noise field may shift."""


@dataclass(frozen=True)
class RealSpec:
    """What the videos show; the defaults match what DAVIS and street cameras show at the
    training resolution (H, W)."""

    size: tuple[int, int] = (256, 448)
    frames: int = 24
    min_objects: int = 1
    max_objects: int = 4
    min_extent: float = 0.15
    """Smallest object diameter at its first frame, as a fraction of the frame height."""
    max_extent: float = 0.7
    max_speed: float = 0.02
    """Fastest object speed, as a fraction of the frame width per frame."""
    max_zoom: float = 0.03
    """Largest change of an object's log scale per frame (approaching or receding)."""
    max_spin: float = 0.03
    """Fastest rotation, radians per frame."""
    enter_prob: float = 0.3
    """Chance that an object starts outside the frame and crosses it."""
    occlusion_prob: float = 0.4
    """Chance that a video scripts a large object passing fully over a small one."""
    region_prob: float = 0.7
    """Chance that an object is a region cut from a picture rather than a textured blob."""
    clip_prob: float = 0.3
    """Chance that the backdrop is a clip shot, where the split has any."""
    moving_camera_prob: float = 0.5
    jitter_prob: float = 0.3
    shadow_prob: float = 0.3
    """Chance that an object casts a soft shadow (never part of its mask, as in DAVIS)."""
    blur_prob: float = 0.3
    noise_prob: float = 0.5
    cutout_prob: float = 0.0
    """Chance that an object is a real thing cut out of its photograph (a person, an animal,
    a vehicle: :func:`.imagery.cutout_names`). 0, the default, draws nothing for it, so the
    videos of recipes written before it stay the same."""
    street_prob: float = 0.0
    """Chance that a still backdrop is one of Scratch's photographs of streets, parks, courts
    and rooms (:func:`.imagery.street_names`); 0 as ``cutout_prob``."""
    group_prob: float = 0.0
    """Chance that an object (after the first) walks beside the one before it: its path, a
    little aside, at about its size, touching or partly in front of it, as people walk in
    pairs and groups past a camera. Separating such neighbours is what a tracker of crowds
    must learn; independent paths rarely show it. 0 as ``cutout_prob``."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise InvalidInputError("RealSpec needs 1 <= min_objects <= max_objects")
        if self.frames < 1:
            raise InvalidInputError("RealSpec.frames must be >= 1")
        if not 0 < self.min_extent <= self.max_extent:
            raise InvalidInputError("RealSpec needs 0 < min_extent <= max_extent")


@dataclass(frozen=True)
class Sprite:
    """An object's look: RGBA pixels cut from (or textured by) picture ``source``."""

    source: str
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the pixels taken from the picture
    rgba: np.ndarray  # (h, w, 4) uint8
    anchor: np.ndarray  # (2,) (x, y) the point that follows the path: the mask's centroid
    radius: float  # farthest mask pixel from the anchor
    inner: float  # radius of a disc around the anchor the mask surely covers (0: unknown)
    upright: bool = False  # a person or a vehicle: tilts a little, never spins


@dataclass(frozen=True)
class Shadow:
    """A darkened, blurred copy of the object's alpha, drawn just behind it."""

    dx: int
    dy: int
    opacity: float
    softness: int  # box-blur radius in pixels


@dataclass(frozen=True)
class Layer:
    """One object: its sprite and where it is at each frame (sprite pixels x scale)."""

    sprite: Sprite
    centre: np.ndarray  # (T, 2) frame position of the anchor
    scale: np.ndarray  # (T,) frame pixels per sprite pixel
    angle: np.ndarray  # (T,) radians
    shadow: Shadow | None = None


@dataclass(frozen=True)
class Backdrop:
    source: str  # a picture or a clip shot (see imagery)
    frame_index: np.ndarray  # (T,) frame of the source shown (0 for a picture)
    camera: np.ndarray  # (T, 3) window centre x, y in source pixels; source pixels per pixel


@dataclass(frozen=True)
class Look:
    """What the camera does to light: out = (x - 0.5) * gain + 0.5 + offset, blur, noise."""

    gain: np.ndarray  # (T, 3)
    offset: np.ndarray  # (T,)
    blur: float  # box-blur radius in pixels; 0: sharp
    noise: float  # standard deviation on the 0..1 scale; 0: clean
    seed: int


@dataclass(frozen=True)
class Scene:
    """Everything a video shows, decided before anything is drawn; layers back to front."""

    size: tuple[int, int]
    backdrop: Backdrop
    layers: tuple[Layer, ...]
    look: Look


def _rng(split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    return np.random.default_rng(np.random.SeedSequence([_STREAM, SPLITS[split], index]))


# --- objects -----------------------------------------------------------------------------


def _sprite(
    source: str,
    box: tuple[int, int, int, int],
    rgb: np.ndarray,
    alpha: np.ndarray,
    inner: float,
    upright: bool = False,
) -> Sprite:
    """Package pixels and a soft alpha (0..1) with the anchor and radius of its mask."""
    ys, xs = np.nonzero(alpha >= 0.5)
    anchor = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    radius = float(np.hypot(xs + 0.5 - anchor[0], ys + 0.5 - anchor[1]).max()) + 1.0
    a8 = np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)
    return Sprite(source, box, np.dstack([rgb, a8]), anchor, radius, inner, upright)


def _cut_region(rng: np.random.Generator, name: str) -> Sprite | None:
    """The most object-like of a few regions grown in picture ``name`` (None if none is).

    Regions too small, too elongated or too ragged to read as one object are refused; of the
    others the one that contrasts most with its surroundings is cut, with its holes filled
    (an eye belongs to the face)."""
    sp = imagery.superpixels(name)
    h, w = sp.labels.shape
    seeds = np.flatnonzero(~sp.border)
    best, best_score = None, -1.0
    for _ in range(_REGION_TRIES if len(seeds) else 0):
        target = rng.uniform(0.02, 0.12) * h * w
        region = sp.grow(int(rng.choice(seeds)), target, rng.uniform(12.0, 30.0))
        area = float(sp.area[region].sum())
        x0, y0 = (sp.centroid[region] - 0.75 * np.sqrt(sp.area[region])[:, None]).min(0)
        x1, y1 = (sp.centroid[region] + 0.75 * np.sqrt(sp.area[region])[:, None]).max(0)
        bw, bh = x1 - x0, y1 - y0
        if area < 0.3 * target or max(bw, bh) > 3 * min(bw, bh) or area < 0.35 * bw * bh:
            continue
        score = sp.contrast(region)
        if score > best_score:
            best, best_score = region, score
    return None if best is None else _region_sprite(name, sp, best)


def _region_sprite(name: str, sp: imagery.Superpixels, region: np.ndarray) -> Sprite:
    h, w = sp.labels.shape
    mask = region[sp.labels]
    ys, xs = np.nonzero(mask)
    pad = 4  # room for the feathered edge
    x0, y0 = max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0)
    x1, y1 = min(int(xs.max()) + 1 + pad, w), min(int(ys.max()) + 1 + pad, h)
    crop = ndimage.binary_fill_holes(mask[y0:y1, x0:x1])
    alpha = ndimage.gaussian_filter(crop.astype(np.float32), _FEATHER)
    rgb = imagery.load_picture(name)[y0:y1, x0:x1]
    return _sprite(name, (x0, y0, x1, y1), rgb, alpha, 0.0)


def _blob(rng: np.random.Generator, name: str) -> Sprite:
    """A smooth closed shape filled with a crop of picture ``name``, lightly shaded."""
    picture = imagery.load_picture(name)
    ph, pw, _ = picture.shape
    radius = min(rng.uniform(40, 90), (min(ph, pw) - 6) / 2.8 - 1)
    side = 2 * math.ceil(radius * 1.4) + 4  # the shape reaches 1.28 radius at most
    corners = rng.integers(0, [pw - side + 1, ph - side + 1], size=(_TEXTURE_TRIES, 2))
    spread = [picture[y : y + side, x : x + side].std() for x, y in corners]
    x0, y0 = (int(v) for v in corners[int(np.argmax(spread))])  # real objects are rarely flat
    ks = np.arange(2, 6)
    amp = rng.uniform(-0.1, 0.1, len(ks)) / np.sqrt(ks - 1)
    phase = rng.uniform(0, 2 * math.pi, len(ks))
    yy, xx = np.mgrid[0:side, 0:side] + 0.5 - side / 2
    rho, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    edge = radius * (1 + (amp * np.cos(ks * theta[..., None] + phase)).sum(-1))
    alpha = np.clip((edge - rho) / (2 * _FEATHER) + 0.5, 0, 1).astype(np.float32)
    shade = 1 - 0.2 * np.clip(rho / edge, 0, 1) ** 2  # a hint of roundness
    rgb = picture[y0 : y0 + side, x0 : x0 + side] * shade[..., None]
    inner = radius * (1 - np.abs(amp).sum()) - 2 * _FEATHER
    rgb8 = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return _sprite(name, (x0, y0, x0 + side, y0 + side), rgb8, alpha, inner)


def _cutout(rng: np.random.Generator, name: str) -> Sprite:
    """Cut-out ``name``, mirrored half the time, its edge feathered like the regions'."""
    rgb, mask = imagery.load_cutout(name)
    if rng.random() < 0.5:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    pad = 4  # room for the feathered edge
    rgb = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    alpha = ndimage.gaussian_filter(np.pad(mask, pad).astype(np.float32), _FEATHER)
    h, w = mask.shape
    return _sprite(name, (0, 0, w, h), rgb, alpha, 0.0, upright=True)


def _make_sprite(
    rng: np.random.Generator, spec: RealSpec, pictures: list[str], cutouts: tuple[str, ...] = ()
) -> Sprite:
    if cutouts and spec.cutout_prob and rng.random() < spec.cutout_prob:
        return _cutout(rng, cutouts[int(rng.integers(len(cutouts)))])
    name = pictures[int(rng.integers(len(pictures)))]
    if rng.random() < spec.region_prob:
        sprite = _cut_region(rng, name)
        if sprite is not None:
            return sprite
    return _blob(rng, name)


def _fit(sprite: Sprite, scale: np.ndarray) -> tuple[Sprite, np.ndarray]:
    """Shrink a sprite that is always drawn much smaller than it is (bilinear sampling would
    alias its texture); returns the sprite and the path's scale in its new pixels."""
    factor = min(1.0, 1.25 * float(scale.max()))
    if factor > 0.8:
        return sprite, scale
    h, w, _ = sprite.rgba.shape
    size = (max(2, round(w * factor)), max(2, round(h * factor)))
    rgba = np.asarray(Image.fromarray(sprite.rgba).resize(size, Image.Resampling.LANCZOS))
    f = np.array([size[0] / w, size[1] / h])
    small = Sprite(
        sprite.source,
        sprite.box,
        rgba,
        sprite.anchor * f,
        sprite.radius * f.max(),
        sprite.inner * f.min(),
        sprite.upright,
    )
    return small, scale / f.mean()


# --- motion ------------------------------------------------------------------------------


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect positions into [lo, hi]: a path that meets a border bounces off it."""
    if hi <= lo:
        return np.full_like(x, (lo + hi) / 2)
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _path(
    rng: np.random.Generator, spec: RealSpec, radius: float, enters: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (T, 2), scale (T,) and angle (T,) of an object whose sprite has ``radius``."""
    h, w = spec.size
    t = np.arange(spec.frames, dtype=np.float64)
    extent = rng.uniform(spec.min_extent, spec.max_extent) * h
    zoom = rng.uniform(-1, 1) * spec.max_zoom if rng.random() < 0.5 else 0.0
    scale = extent / (2 * radius) * np.exp(zoom * t)
    angle = rng.uniform(-0.35, 0.35) + rng.uniform(-1, 1) * spec.max_spin * t
    speed = rng.uniform(0.05, 1.0) * spec.max_speed * w
    wobble = rng.uniform(0, 0.7) * np.sin(
        2 * math.pi * t / rng.uniform(8, 30) + rng.uniform(0, 2 * math.pi)
    )
    half = extent / 2
    if enters:  # from just outside a border towards a point inside
        along = rng.uniform(0.2, 0.8)
        sides = [
            (-half, along * h),
            (w + half, along * h),
            (along * w, -half),
            (along * w, h + half),
        ]
        start = np.array(sides[int(rng.integers(4))])
        aim = np.array([w, h]) * rng.uniform(0.3, 0.7, 2) - start
        heading = math.atan2(aim[1], aim[0]) + rng.uniform(-0.02, 0.02) * t
        speed = max(speed, 0.5 * spec.max_speed * w)
    else:
        start = np.array([rng.uniform(half, w - half), rng.uniform(half, h - half)])
        heading = rng.uniform(0, 2 * math.pi) + rng.uniform(-0.06, 0.06) * t
    step = speed * (1 + wobble)[:, None] * np.stack([np.cos(heading), np.sin(heading)], 1)
    centre = start + np.concatenate([np.zeros((1, 2)), np.cumsum(step[:-1], axis=0)])
    if not enters:
        margin = 0.25 * extent
        centre[:, 0] = _fold(centre[:, 0], margin, w - margin)
        centre[:, 1] = _fold(centre[:, 1], margin, h - margin)
    return centre, scale, angle


def _beside(
    rng: np.random.Generator,
    leader: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    radius: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, scale and angle of an object with a sprite of ``radius`` walking beside
    ``leader`` (its centre, scale, angle and sprite radius): at 0.85-1.15 times its size,
    its centre a quarter to two thirds of that size to one side (people are narrower than
    tall: they touch or overlap), drifting a little back and forth along the way."""
    centre, scale, angle, leader_radius = leader
    extent = 2 * leader_radius * scale  # (T,) the leader's diameter in frame pixels
    size = extent * rng.uniform(0.85, 1.15)
    side = rng.choice((-1.0, 1.0)) * rng.uniform(0.25, 0.65)
    drift = np.cumsum(rng.normal(0.0, 0.01, (len(scale), 2)), axis=0)
    back = rng.uniform(-0.15, 0.15)  # a little ahead of or behind the leader
    aside = np.stack([np.full_like(extent, side), np.full_like(extent, back)], 1)
    return centre + (aside + drift) * extent[:, None], size / (2 * radius), angle.copy()


def _layer(sprite: Sprite, centre: np.ndarray, scale: np.ndarray, angle: np.ndarray) -> Layer:
    if sprite.upright:  # people and vehicles lean a little and keep their lean
        angle = np.full_like(angle, 0.15 * angle[0])
    sprite, scale = _fit(sprite, scale)
    return Layer(sprite, centre, scale, angle)


def _occlusion(
    rng: np.random.Generator, spec: RealSpec, pictures: list[str], cutouts: tuple[str, ...]
) -> tuple[Layer, Layer] | None:
    """A small, slow object and a blob, drawn in front of it, that fully covers it mid-video."""
    if spec.frames < 10:
        return None
    h, w = spec.size
    victim = _make_sprite(rng, spec, pictures, cutouts)
    t_mid = int(rng.integers(spec.frames // 3, 2 * spec.frames // 3 + 1))
    t = np.arange(spec.frames, dtype=np.float64)
    r_victim = spec.min_extent * h / 2
    drift = rng.uniform(-0.003, 0.003, 2) * w
    centre = np.array([w, h]) * rng.uniform(0.3, 0.7, 2) + np.outer(t - t_mid, drift)
    spin = rng.uniform(-0.01, 0.01) * t
    back = _layer(victim, centre, np.full(spec.frames, r_victim / victim.radius), spin)
    cover = _blob(rng, pictures[int(rng.integers(len(pictures)))])
    s = (1.5 * r_victim + 3) / cover.inner  # its inner disc covers the victim with room
    spare = cover.inner * s - r_victim  # how far it can be off-centre and still cover
    heading = rng.uniform(0, 2 * math.pi)
    speed = min(2 * spare / rng.uniform(2, 6), 0.06 * w)
    velocity = speed * np.array([math.cos(heading), math.sin(heading)])
    path = centre[t_mid] + np.outer(t - t_mid, velocity + drift)
    front = _layer(cover, path, np.full(spec.frames, s), np.zeros(spec.frames))
    return back, front


# --- backdrop and look -------------------------------------------------------------------


def _source_frames(name: str) -> np.ndarray:
    """(N, H, W, 3) frames of a backdrop source: a clip shot, or a picture as one frame."""
    return imagery.load_clip(name) if "#" in name else imagery.load_picture(name)[None]


def _timing(rng: np.random.Generator, available: int, frames: int) -> np.ndarray:
    """Which source frame each video frame shows: a run of the shot, slowed if it is short."""
    if available < frames:
        return np.floor(np.linspace(0, available - 1, frames)).astype(np.int64)
    step = 2 if available >= 2 * frames and rng.random() < 0.3 else 1
    start = int(rng.integers(available - step * (frames - 1)))
    return start + step * np.arange(frames)


def _camera(rng: np.random.Generator, spec: RealSpec, source_hw: tuple[int, int]) -> np.ndarray:
    """Window (centre x, centre y, source pixels per pixel) per frame: still, or a slow pan
    and zoom between two windows inside the source, plus hand-held jitter on some videos."""
    h, w = spec.size
    sh, sw = source_hw
    m = _JITTER_MARGIN
    fit = min((sw - 2 * m) / w, (sh - 2 * m) / h)
    t = np.arange(spec.frames) / max(spec.frames - 1, 1)

    def place(s: float, centre: np.ndarray) -> np.ndarray:
        lo = np.array([s * w / 2 + m, s * h / 2 + m])
        return np.clip(centre, lo, np.array([sw, sh]) - lo)

    s0 = fit * rng.uniform(0.6, 1.0)
    c0 = place(s0, np.array([sw, sh]) * rng.uniform(0, 1, 2))
    s1, c1 = s0, c0
    if rng.random() < spec.moving_camera_prob:
        s1 = min(fit, s0 * math.exp(rng.uniform(-0.012, 0.012) * spec.frames))
        pan = rng.uniform(-1, 1, 2) * 0.012 * w * s0 * spec.frames
        c1 = place(s1, c0 + pan)
    camera = np.concatenate(
        [np.outer(1 - t, c0) + np.outer(t, c1), (s0 + (s1 - s0) * t)[:, None]], 1
    )
    if rng.random() < spec.jitter_prob:
        shake = ndimage.gaussian_filter1d(rng.normal(0, 1.5, (spec.frames, 2)), 1.0, axis=0)
        camera[:, :2] += np.clip(shake * camera[:, 2:], -m, m)
    return camera


def _backdrop(
    rng: np.random.Generator,
    spec: RealSpec,
    pictures: list[str],
    clips: tuple[str, ...],
    streets: tuple[str, ...],
) -> Backdrop:
    if clips and rng.random() < spec.clip_prob:
        name = clips[int(rng.integers(len(clips)))]
        frames = _source_frames(name)
        index = _timing(rng, len(frames), spec.frames)
    else:
        if streets and spec.street_prob and rng.random() < spec.street_prob:
            pictures = list(streets)
        name = pictures[int(rng.integers(len(pictures)))]
        frames = _source_frames(name)
        index = np.zeros(spec.frames, dtype=np.int64)
    return Backdrop(name, index, _camera(rng, spec, frames.shape[1:3]))


def _look(rng: np.random.Generator, spec: RealSpec) -> Look:
    t = np.arange(spec.frames) / max(spec.frames - 1, 1)
    contrast = rng.uniform(0.75, 1.2) * (1 + rng.uniform(-0.06, 0.06, 3))  # with a colour cast
    drift = rng.uniform(-0.15, 0.15) if rng.random() < 0.3 else 0.0  # lighting changes
    gain = np.outer(1 + drift * t, contrast)
    offset = np.full(spec.frames, rng.uniform(-0.08, 0.08))
    blur = rng.uniform(0.4, 1.0) if rng.random() < spec.blur_prob else 0.0
    noise = rng.uniform(0.004, 0.02) if rng.random() < spec.noise_prob else 0.0
    return Look(gain, offset, blur, noise, int(rng.integers(2**63)))


# --- the scene and its rendering ---------------------------------------------------------


def plan_scene(split: str, index: int, spec: RealSpec | None = None) -> Scene:
    """Every choice of video ``index`` of ``split``, before anything is drawn."""
    spec = spec or RealSpec()
    rng = _rng(split, index)
    pictures = list(imagery.picture_names(split))
    streets = imagery.street_names(split) if spec.street_prob else ()
    cutouts = imagery.cutout_names(split) if spec.cutout_prob else ()
    backdrop = _backdrop(rng, spec, pictures, imagery.clip_names(split), streets)
    others = [p for p in pictures if p != backdrop.source] or pictures  # no camouflage
    count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    layers = []
    paths: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
    for k in range(count):
        sprite = _make_sprite(rng, spec, others, cutouts)
        enters = rng.random() < spec.enter_prob and k > 0  # someone is there from the start
        if k and spec.group_prob and rng.random() < spec.group_prob:
            path = _beside(rng, paths[-1], sprite.radius)
        else:
            path = _path(rng, spec, sprite.radius, enters)
        paths.append((*path, sprite.radius))
        layers.append(_layer(sprite, *path))
    if rng.random() < spec.occlusion_prob:
        pair = _occlusion(rng, spec, others, cutouts)
        if pair is not None:
            layers = [pair[0], *layers[1:], pair[1]]
    light = rng.uniform(0, 2 * math.pi)  # one light per scene: shadows fall the same way
    layers = [
        _cast_shadow(rng, spec, _film(la, backdrop.camera, spec.size), light) for la in layers
    ]
    return Scene(spec.size, backdrop, tuple(layers), _look(rng, spec))


def _film(layer: Layer, camera: np.ndarray, size: tuple[int, int]) -> Layer:
    """Paths are planned as seen at the first frame; a panning, zooming or shaking camera
    moves and scales the objects with the backdrop, so an object at rest stays put on it."""
    half = np.array([size[1], size[0]]) / 2
    world = camera[0, :2] + (layer.centre - half) * camera[0, 2]
    centre = (world - camera[:, :2]) / camera[:, 2:] + half
    return dataclasses.replace(
        layer, centre=centre, scale=layer.scale * camera[0, 2] / camera[:, 2]
    )


def _cast_shadow(rng: np.random.Generator, spec: RealSpec, layer: Layer, light: float) -> Layer:
    if rng.random() >= spec.shadow_prob:
        return layer
    extent = 2 * layer.sprite.radius * float(layer.scale[0])
    reach = rng.uniform(0.04, 0.12) * extent
    shadow = Shadow(
        dx=round(reach * math.cos(light)),
        dy=round(reach * math.sin(light)),
        opacity=rng.uniform(0.25, 0.5),
        softness=max(1, round(rng.uniform(0.02, 0.06) * extent)),
    )
    return dataclasses.replace(layer, shadow=shadow)


def _place(
    layer: Layer, image: Image.Image, t: int, size: tuple[int, int]
) -> tuple[Image.Image, int, int] | None:
    """Layer ``t`` warped into its frame box: (RGBA patch, x0, y0), None if out of frame.

    ``image`` is the sprite, premultiplied ("RGBa") so that bilinear sampling does not bleed
    the colour of transparent pixels into the edge."""
    h, w = size
    s, a = float(layer.scale[t]), float(layer.angle[t])
    c, sn = math.cos(a), math.sin(a)
    sh, sw, _ = layer.sprite.rgba.shape
    corners = np.array([[0, 0], [sw, 0], [0, sh], [sw, sh]], dtype=np.float64)
    rel = corners - layer.sprite.anchor
    frame_xy = layer.centre[t] + s * np.stack(
        [c * rel[:, 0] - sn * rel[:, 1], sn * rel[:, 0] + c * rel[:, 1]], 1
    )
    x0, y0 = np.maximum(np.floor(frame_xy.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(frame_xy.max(0)).astype(int), [w, h])
    if x1 <= x0 or y1 <= y0:
        return None
    # frame (x, y) -> sprite: anchor + R(-a) (xy - centre) / s, written for the box's pixels
    m = np.array([[c, sn], [-sn, c]]) / s
    b = layer.sprite.anchor + m @ (np.array([x0, y0], dtype=np.float64) - layer.centre[t])
    data = (m[0, 0], m[0, 1], b[0], m[1, 0], m[1, 1], b[1])
    patch = image.transform(
        (int(x1 - x0), int(y1 - y0)), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR
    )
    return patch.convert("RGBA"), int(x0), int(y0)


def _view(source: Image.Image, camera: np.ndarray, size: tuple[int, int]) -> Image.Image:
    h, w = size
    cx, cy, s = (float(v) for v in camera)
    data = (s, 0.0, cx - s * w / 2, 0.0, s, cy - s * h / 2)
    return source.transform((w, h), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)


@functools.cache
def _noise_field(h: int, w: int) -> np.ndarray:
    """Unit Gaussian noise a little larger than a frame, drawn once per process.

    Each frame adds a window of it at a random offset: drawing fresh noise for every frame
    would cost more than rendering the frame."""
    rng = np.random.default_rng(np.random.SeedSequence([_STREAM, h, w]))
    return rng.standard_normal((h + _NOISE_SLACK, w + _NOISE_SLACK, 3), np.float32)


def _develop(frames: np.ndarray, look: Look) -> np.ndarray:
    """Apply the look's gain, offset and noise to (T, H, W, 3) uint8 frames, in place."""
    t, h, w, _ = frames.shape
    out = frames.astype(np.float32)
    out *= look.gain[:, None, None, :].astype(np.float32)
    out += ((0.5 + look.offset) * 255 - 127.5 * look.gain.T).T[:, None, None, :]
    if look.noise:
        field = _noise_field(h, w) * np.float32(look.noise * 255)
        dy, dx = np.random.default_rng(look.seed).integers(0, _NOISE_SLACK + 1, (2, t))
        for i in range(t):
            out[i] += field[dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    np.clip(out, 0, 255, out=out)
    frames[:] = out + 0.5
    return frames


def _shade(image: Image.Image, patch: Image.Image, x0: int, y0: int, shadow: Shadow) -> None:
    """Darken ``image`` under the patch's shadow; the canvas grows by the blur so that the
    shadow fades out instead of ending at the patch's box."""
    r = shadow.softness
    alpha = ImageOps.expand(patch.getchannel("A"), border=2 * r, fill=0)
    lut = [round(v * shadow.opacity) for v in range(256)]
    mask = alpha.point(lut).filter(ImageFilter.BoxBlur(r))
    image.paste((0, 0, 0), (x0 + shadow.dx - 2 * r, y0 + shadow.dy - 2 * r), mask)


def render_scene(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and full masks (T, K, H, W) bool: where each layer's alpha
    is at least one half, occluded or not."""
    h, w = scene.size
    source = _source_frames(scene.backdrop.source)
    # A window much larger than the frame is box-reduced first: bilinear sampling alone aliases.
    reduce = max(1, int(scene.backdrop.camera[:, 2].min()))
    camera = scene.backdrop.camera / reduce
    backdrops = {
        i: Image.fromarray(source[i]).reduce(reduce)
        for i in set(scene.backdrop.frame_index.tolist())
    }
    sprites = [Image.fromarray(la.sprite.rgba, "RGBA").convert("RGBa") for la in scene.layers]
    n = len(scene.backdrop.frame_index)
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    full = np.zeros((n, len(scene.layers), h, w), dtype=bool)
    for t in range(n):
        image = _view(backdrops[int(scene.backdrop.frame_index[t])], camera[t], (h, w))
        for k, layer in enumerate(scene.layers):  # back to front
            placed = _place(layer, sprites[k], t, (h, w))
            if placed is None:
                continue
            patch, x0, y0 = placed
            if layer.shadow is not None:
                _shade(image, patch, x0, y0, layer.shadow)
            image.paste(patch, (x0, y0), patch)
            alpha = np.asarray(patch.getchannel("A"))
            full[t, k, y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] = alpha >= 128
        if scene.look.blur:  # a box blur: as soft as a slight defocus, at a third of the cost
            image = image.filter(ImageFilter.BoxBlur(scene.look.blur))
        frames[t] = np.asarray(image)
    return _develop(frames, scene.look), full


def generate_real_video(split: str, index: int, spec: RealSpec | None = None) -> Video:
    """Video ``index`` of ``split``; the same arguments always give the same pixels."""
    frames, full = render_scene(plan_scene(split, index, spec))
    classes = np.zeros(full.shape[1], dtype=np.int64)
    return layered_video(f"real-{split}-{index:06d}", frames, full, classes, CLASS_NAMES)
