"""Real pictures and clips that Debian and PyPI packages ship, for the real-imagery generator.

Training videos made of real photographs teach what real camera footage looks like (sensor
texture, natural edges, real colours) without downloading anything: every source is a file
an installed package put on disk.

- Debian ``opencv-doc``: the photographs of ``/usr/share/doc/opencv-doc/examples/data`` and
  two clips, ``tree.avi`` (a hand-held camera facing a tree) and ``Megamind.avi`` (a film
  trailer, cut into shots), used as moving backgrounds.
- Debian ``mate-backgrounds``: the twelve nature photographs of
  ``/usr/share/backgrounds/mate/nature``.
- PyPI ``scikit-image`` (the ``train`` extra): the photographs inside its wheel, read from
  the package folder directly, so its data fetcher (which may download) is never called.
- Debian ``scratch`` (media CC-BY-SA-3.0, see the model card): **cut-outs**, photographs of
  real people, animals, vehicles and things cut out of their picture with their own masks
  (:func:`cutout_names`, :func:`load_cutout`), and photographs of streets, parks, courts and
  rooms as backdrops (:func:`street_names`). These are what real footage shows that regions
  grown over superpixels do not: whole people and vehicles, with their silhouettes.

Only photographs are listed: drawings, logos, text, chessboards and renders are left out, so
the model sees no shapes that real footage lacks.

**``vtest.avi`` is never used.** It is the held-out surveillance clip every evaluation runs
on; :func:`load_clip` refuses it by name, so no change of the catalogue can train on it.

Splits: every *scene* (a picture, or pictures of one scene such as a stereo pair, which must
not straddle splits) goes to train, val or test by a hash of its first file's name (70 / 15 /
15 %), so val and test videos are built from pictures no training video contains, and adding
a picture never moves another. Clip shots are split the same way; a split may hold none, and
then its videos use still pictures only.

Pictures are decoded at most :data:`WORKING_SIDE` pixels on their long side and cached per
process, with their superpixels (:func:`superpixels`), so a training run decodes and segments
each picture once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ausm_stream.errors import InvalidInputError

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")
SCRATCH_MEDIA = Path("/usr/share/scratch/Media")
WORKING_SIDE = 640
"""Long side, in pixels, pictures are decoded at: enough for a 256 x 448 crop with room to pan."""
CLIP_SIDE = 480
"""Long side clips are decoded at; a clip in use stays decoded in memory, so this bounds it."""
FORBIDDEN = frozenset({"vtest.avi"})
"""Files no generated video may contain: the held-out evaluation clip."""
SPLIT_BOUNDS = {"train": (0.0, 0.70), "val": (0.70, 0.85), "test": (0.85, 1.0)}

# Scenes: files that show one scene (stereo pairs, two views) stay together in one split.
_OPENCV_SCENES = (
    ("aero1.jpg", "aero3.jpg"),
    ("aloeL.jpg", "aloeR.jpg"),
    ("apple.jpg",),
    ("baboon.jpg",),
    ("basketball1.png", "basketball2.png"),
    ("board.jpg",),
    ("box.png", "box_in_scene.png"),
    ("building.jpg",),
    ("butterfly.jpg",),
    ("chicky_512.png",),
    ("ela_original.jpg",),
    ("fruits.jpg",),
    ("graf1.png", "graf3.png"),
    ("home.jpg",),
    ("left.jpg", "right.jpg"),
    ("leuvenA.jpg", "leuvenB.jpg"),
    ("licenseplate_motion.jpg",),
    ("messi5.jpg",),
    ("orange.jpg",),
    ("rubberwhale1.png", "rubberwhale2.png"),
    ("smarties.png",),
    ("squirrel_cls.jpg",),
    ("starry_night.jpg",),
    ("stuff.jpg",),
)
_MATE_SCENES = tuple(
    (f"{name}.jpg",)
    for name in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow",
        "LadyBird", "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower",
    )
)  # fmt: skip
_SKIMAGE_SCENES = (
    ("astronaut.png",),
    ("brick.png",),
    ("camera.png",),
    ("chelsea.png",),
    ("coffee.png",),
    ("coins.png",),
    ("grass.png",),
    ("gravel.png",),
    ("hubble_deep_field.jpg",),
    ("ihc.png",),
    ("moon.png",),
    ("motorcycle_left.png", "motorcycle_right.png"),
    ("rocket.jpg",),
)
# Scratch's photographs (its drawings are left out). Cut-outs are grouped by what they show,
# so one person's poses stay in one split; backdrops are one scene each.
_SCRATCH_CUTOUTS = {
    "People": {
        "amon": ("amon1.gif",),
        "anjuli": tuple(f"anjuli-{i}.gif" for i in range(1, 6)),
        "anna": tuple(f"anna-{i}.gif" for i in range(1, 4)),
        "breakdancer": tuple(f"breakdancer{i}.gif" for i in range(1, 4)),
        "calvrett": ("calvrett.gif", "calvrett-jumping.gif", "calvrett-thinking.gif"),
        "cassy": (
            "cassy-chillin.gif", "cassy-dancing-1.gif", "cassy-dancing-2.gif",
            "cassy-dancing-3.gif", "cassy-dancing-4.gif", "cassy-jumping-1.gif",
            "cassy-jumping-2.gif", "cassy-phone-1.gif", "cassy-sitting-1.gif",
            "cassy-standing-1.gif",
        ),
        "chamak": ("chamak1.gif", "chamak2.gif"),
        "dan": tuple(f"dan{i}.gif" for i in range(1, 7)),
        "ed": ("ed.gif",),
        "jay": ("jay.gif",),
        "jodi": ("jodi1.gif", "jodi2.gif"),
        "mako": ("mako-laughing.gif", "mako-screaming.gif", "mako-stop.gif"),
        "marissa": ("marissa.gif", "marissa-crouching.gif", "marissa-sitting.gif"),
        "nathan": ("nathan.gif",),
        "nina": ("nina1.gif",),
        "paul": ("paul1.gif",),
        "referee": ("referee1.gif", "referee2.gif"),
        "ribbon-dancer": ("ribbon-dancer.gif",),
        "sam": ("sam.gif",),
        "thai-dancer": ("thai-dancer.gif", "thai-dancer2.gif"),
    },
    "Animals": {
        "bird": ("bird-flying.gif",),
        "buffalo": ("buffalo1.gif",),
        "cow": ("cow1.gif",),
        "elephant": ("elephant.gif",),
        "ant": ("insect1-a.gif", "insect1-b.gif", "insect2.gif"),
        "squirrel": ("squirrel1.png",),
    },
    "Transportation": {
        "airplane": ("airplane.gif",),
        "bike": ("bike.gif",),
        "bus": ("bus.gif",),
        "car-blue": ("car-blue.gif",),
        "car-bug": ("car-bug.gif",),
        "car-cow": ("car-cow.gif",),
        "convertible": ("convertible1.gif", "convertible2.gif"),
        "sail-boat": ("sail-boat.gif",),
        "street-cleaner": ("street-cleaner-mit.png",),
        "train": ("train.gif",),
        "tug-boat": ("tug-boat.gif",),
        "yacht": ("yacht.gif",),
    },
    "Things": {
        "fire-hydrant": ("fire-hydrant.gif",),
        "flower-vase": ("flower-vase.gif",),
        "fruit-platter": ("fruit_platter.gif",),
        "lamp": ("lamp.gif",),
        "lego": ("lego.gif",),
        "marble-building": ("marble-building.gif",),
        "palmtree": ("palmtree.gif",),
        "trampoline": ("trampoline.gif",),
        "umbrella": ("umbrella.gif",),
        "drum": ("drum1.gif",),
    },
}  # fmt: skip
_SCRATCH_BACKDROPS = {
    "Outdoors": (
        "atom-playground", "bench-with-view", "boardwalk", "brick-wall-and-stairs",
        "brick-wall1", "brick-wall2", "building-at-mit", "building-fireproof", "castle",
        "city-with-water", "city-with-water2", "driveway", "graffiti", "hallway_outdoors",
        "hay_field", "houses", "mansion", "parking-ramp", "pool", "route66", "school2",
        "silos", "the-movies", "train-tracks1", "train-tracks2", "village", "wooden-house",
    ),
    "Nature": (
        "beach-malibu", "canyon", "flower-bed", "forest", "garden-rock", "grand-canyon",
        "gravel-desert", "hill", "lake", "pathway", "tree", "water-and-rocks", "wave",
        "woods-and-bench",
    ),
    "Indoors": (
        "clothing-store", "hall", "kitchen", "party-room", "room1", "room2", "room3",
        "the-movies-inside",
    ),
    "Sports": (
        "baseball-field", "basketball-court1-a", "basketball-court1-b", "football-field",
        "playing-field", "tennis-backboard",
    ),
}  # fmt: skip
_CLIPS = {"tree.avi": 52, "Megamind.avi": None}
"""Clip -> frames kept (None: all); tree.avi's last frames show an unlabelled hand."""
_THUMB_SIDE = 64
_SHOT_CUT = 15.0
"""Mean absolute change (0-255) between consecutive thumbnails that marks a cut."""
_MIN_SHOT = 8
_DARK = 8.0
"""Frames darker than this on average (fades to black) are dropped."""


@dataclass(frozen=True)
class _Source:
    package: str
    root: Path
    scenes: tuple[tuple[str, ...], ...]
    install: str


@dataclass(frozen=True)
class Superpixels:
    """A picture cut into superpixels, and regions grown over them: object outlines that
    follow the picture's own edges."""

    labels: np.ndarray  # (H, W) int16, at the picture's working resolution
    lab: np.ndarray  # (N, 3) mean CIELAB colour
    centroid: np.ndarray  # (N, 2) (x, y)
    area: np.ndarray  # (N,) pixels
    border: np.ndarray  # (N,) touches the picture's border
    neighbours: tuple[np.ndarray, ...]

    def grow(self, seed: int, target: float, edge: float) -> np.ndarray:
        """Superpixels (a bool per superpixel) grown from ``seed`` by colour likeness and
        compactness.

        Growing stops at ``target`` area, or earlier where every neighbour is more than
        ``edge`` (CIELAB) from the region's colour, so regions end where the picture's own
        objects do; superpixels on the picture's border are never taken (a straight cut edge
        looks like no real object)."""
        inside = np.zeros(len(self.area), dtype=bool)
        inside[seed] = True
        area = float(self.area[seed])
        lab_sum, xy_sum = self.lab[seed] * area, self.centroid[seed] * area
        while area < target:
            cands = self.rim(inside)
            cands = cands[~self.border[cands]]
            if not len(cands):
                break
            colour = np.linalg.norm(self.lab[cands] - lab_sum / area, axis=1)
            spread = np.linalg.norm(self.centroid[cands] - xy_sum / area, axis=1)
            best = int(np.argmin(colour + 25.0 * spread / math.sqrt(target)))
            if colour[best] > edge and area >= 0.35 * target:
                break
            pick = cands[best]
            inside[pick] = True
            a = float(self.area[pick])
            area += a
            lab_sum, xy_sum = lab_sum + self.lab[pick] * a, xy_sum + self.centroid[pick] * a
        return inside

    def rim(self, inside: np.ndarray) -> np.ndarray:
        """Superpixels next to the region ``inside``, outside it."""
        near = np.unique(np.concatenate([self.neighbours[i] for i in np.flatnonzero(inside)]))
        return near[~inside[near]]

    def contrast(self, inside: np.ndarray) -> float:
        """CIELAB distance between a region's mean colour and its rim's: high for a region
        that stands out from its surroundings as an object does."""
        rim = self.rim(inside)
        if not len(rim):
            return 0.0
        mean_in = np.average(self.lab[inside], axis=0, weights=self.area[inside])
        mean_rim = np.average(self.lab[rim], axis=0, weights=self.area[rim])
        return float(np.linalg.norm(mean_in - mean_rim))


def _skimage_data() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return Path("/nonexistent/skimage/data")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _sources() -> tuple[_Source, ...]:
    return (
        _Source("opencv-doc", OPENCV_DATA, _OPENCV_SCENES, "apt-get install opencv-doc"),
        _Source("mate-backgrounds", MATE_NATURE, _MATE_SCENES, "apt-get install mate-backgrounds"),
        _Source(
            "scikit-image", _skimage_data(), _SKIMAGE_SCENES, "pip install 'ausm-stream[train]'"
        ),
    )


def _scratch() -> _Source:
    """Scratch's media: not among :func:`_sources` (the pictures of every video), since its
    cut-outs and backdrops are used only where a spec asks for them."""
    scenes = tuple(
        tuple(f"Costumes/{kind}/{f}" for f in files)
        for kind, groups in _SCRATCH_CUTOUTS.items()
        for files in groups.values()
    ) + tuple(
        (f"Backgrounds/{kind}/{name}.jpg",)
        for kind, names in _SCRATCH_BACKDROPS.items()
        for name in names
    )
    return _Source("scratch", SCRATCH_MEDIA, scenes, "apt-get install scratch")


def _check(source: _Source, files: tuple[str, ...]) -> None:
    missing = [f for f in files if not (source.root / f).is_file()]
    if missing:
        raise InvalidInputError(
            f"real-imagery videos need the {source.package} package: {source.root} lacks "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; run "
            f"`{source.install}`"
        )


def split_of(name: str) -> str:
    """The split a scene belongs to, from a hash of its name (stable across machines)."""
    digest = hashlib.sha256(name.encode()).digest()[:8]
    u = int.from_bytes(digest, "big") / 2**64
    return next(s for s, (lo, hi) in SPLIT_BOUNDS.items() if lo <= u < hi)


def _split(split: str) -> None:
    if split not in SPLIT_BOUNDS:
        raise InvalidInputError(f"unknown split {split!r}; choose one of {sorted(SPLIT_BOUNDS)}")


def picture_names(split: str) -> tuple[str, ...]:
    """Names (``package:file``) of the pictures of ``split``; raises naming a missing package."""
    _split(split)
    names = []
    for source in _sources():
        _check(source, tuple(f for scene in source.scenes for f in scene))
        for scene in source.scenes:
            if split_of(f"{source.package}:{scene[0]}") == split:
                names += [f"{source.package}:{f}" for f in scene]
    return tuple(names)


def clip_names(split: str) -> tuple[str, ...]:
    """Names (``opencv-doc:FILE#SHOT``) of the clip shots of ``split``; may be empty."""
    _split(split)
    opencv = _sources()[0]
    _check(opencv, tuple(_CLIPS))
    shots = [f"opencv-doc:{clip}#{i}" for clip in _CLIPS for i in range(len(_shots(clip)))]
    return tuple(s for s in shots if split_of(s) == split)


def _scratch_names(split: str, folder: str) -> tuple[str, ...]:
    """Scratch files under ``folder`` whose scene falls in ``split``."""
    _split(split)
    source = _scratch()
    names = []
    for scene in source.scenes:
        if scene[0].startswith(folder):
            _check(source, scene)
            if split_of(f"scratch:{scene[0]}") == split:
                names += [f"scratch:{f}" for f in scene]
    return tuple(names)


def cutout_names(split: str) -> tuple[str, ...]:
    """Names (``scratch:Costumes/KIND/FILE``) of the cut-outs of ``split``: real people,
    animals, vehicles and things with their own masks; one person's poses in one split."""
    return _scratch_names(split, "Costumes/")


def street_names(split: str) -> tuple[str, ...]:
    """Names of Scratch's backdrop photographs of ``split``: streets, parks, courts, rooms."""
    return _scratch_names(split, "Backgrounds/")


@functools.cache
def load_cutout(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Cut-out ``name`` as (H, W, 3) uint8 colour and (H, W) bool mask, cropped to the mask
    (cached). The sprites' transparency is their mask: GIF's is binary, PNG's alpha is cut
    at one half."""
    with Image.open(_path(name)) as im:
        rgba = np.asarray(im.convert("RGBA"))
    mask = rgba[..., 3] >= 128
    if not mask.any():
        raise InvalidInputError(f"cut-out {name} has no opaque pixel")
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return rgba[y0:y1, x0:x1, :3].copy(), mask[y0:y1, x0:x1].copy()


def _path(name: str) -> Path:
    package, _, file = name.partition(":")
    for source in (*_sources(), _scratch()):
        if source.package == package:
            _check(source, (file,))
            return source.root / file
    raise InvalidInputError(f"no imagery package {package!r} (in {name!r})")


@functools.cache
def load_picture(name: str) -> np.ndarray:
    """Picture ``name`` as (H, W, 3) uint8, long side at most :data:`WORKING_SIDE` (cached)."""
    with Image.open(_path(name)) as im:
        scale = WORKING_SIDE / max(im.size)
        if scale < 1:
            size = (round(im.width * scale), round(im.height * scale))
            im.draft("RGB", size)  # JPEG: decode at a reduced size directly (fast)
            rgb = im.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        else:
            rgb = im.convert("RGB")
        return np.asarray(rgb).copy()


def load_clip(name: str) -> np.ndarray:
    """Clip shot ``name`` (``opencv-doc:FILE#SHOT``) as (T, H, W, 3) uint8."""
    stem, _, shot = name.partition("#")
    file = stem.partition(":")[2]
    shots = _shots(file)
    if not shot.isdigit() or int(shot) >= len(shots):
        raise InvalidInputError(f"no shot {shot!r} in {file}: it has {len(shots)}")
    start, end = shots[int(shot)]
    return _decode(file, CLIP_SIDE)[start:end]


@functools.cache
def _decode(file: str, side: int) -> np.ndarray:
    """Every frame of an opencv-doc clip, long side at most ``side`` (cached)."""
    import av

    if file in FORBIDDEN:
        raise InvalidInputError(f"{file} is the held-out evaluation clip: never train on it")
    if file not in _CLIPS:
        raise InvalidInputError(f"{file} is not a catalogued clip: use one of {sorted(_CLIPS)}")
    with av.open(str(_path(f"opencv-doc:{file}"))) as container:
        stream = container.streams.video[0]
        scale = min(1.0, side / max(stream.width, stream.height))
        width, height = round(stream.width * scale) // 2 * 2, round(stream.height * scale) // 2 * 2
        frames = [
            f.to_ndarray(format="rgb24", width=width, height=height)
            for f in container.decode(stream)
        ]
    return np.stack(frames[: _CLIPS[file]])


@functools.cache
def _shots(file: str) -> tuple[tuple[int, int], ...]:
    """[start, end) frame ranges between cuts, without fades to black, at least _MIN_SHOT.

    Found on thumbnails, so listing the shots of a split never holds a full clip in memory."""
    thumbs = _decode(file, _THUMB_SIDE).astype(np.float32)
    cuts = np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2, 3)) > _SHOT_CUT
    bounds = [0, *(np.flatnonzero(cuts) + 1).tolist(), len(thumbs)]
    bright = thumbs.mean(axis=(1, 2, 3)) > _DARK
    shots = []
    for start, end in itertools.pairwise(bounds):
        keep = np.flatnonzero(bright[start:end]) + start
        if len(keep) >= _MIN_SHOT:
            shots.append((int(keep[0]), int(keep[-1]) + 1))
    return tuple(shots)


@functools.cache
def superpixels(name: str) -> Superpixels:
    """SLIC superpixels of picture ``name`` (cached): regions grown over them follow edges.

    SLIC runs at half resolution (four times faster) and the labels are upsampled."""
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    picture = load_picture(name)
    h, w, _ = picture.shape
    half = np.asarray(Image.fromarray(picture).resize((w // 2, h // 2), Image.Resampling.BOX))
    small = slic(half, n_segments=250, compactness=10, start_label=0)
    labels = small[np.minimum(np.arange(h) // 2, h // 2 - 1)][
        :, np.minimum(np.arange(w) // 2, w // 2 - 1)
    ].astype(np.int16)
    n = int(labels.max()) + 1
    flat = labels.ravel()
    area = np.maximum(np.bincount(flat, minlength=n), 1)
    lab = rgb2lab(picture).reshape(-1, 3)
    mean_lab = np.stack([np.bincount(flat, lab[:, c], n) for c in range(3)], 1) / area[:, None]
    ys, xs = np.divmod(np.arange(h * w), w)
    centroid = np.stack([np.bincount(flat, xs, n), np.bincount(flat, ys, n)], 1) / area[:, None]
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return Superpixels(
        labels=labels,
        lab=mean_lab,
        centroid=centroid,
        area=area,
        border=np.isin(np.arange(n), edge),
        neighbours=_adjacency(labels, n),
    )


def _adjacency(labels: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    pairs = np.concatenate(
        [
            np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1),
        ]
    )
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.concatenate([pairs, pairs[:, ::-1]]), axis=0)
    starts = np.searchsorted(pairs[:, 0], np.arange(n + 1))
    return tuple(pairs[starts[i] : starts[i + 1], 1] for i in range(n))
