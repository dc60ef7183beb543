"""Clip sources for training: where the videos of each iteration come from.

``data`` in the training config picks one:

- ``{kind: synthetic, ...ShapesSpec fields}``: fresh synthetic videos every iteration.
- ``{kind: real, ...RealSpec fields}``: fresh videos made of real pictures and clips that
  Debian and PyPI packages ship (:mod:`.real`), every iteration.
- ``{kind: davis, root: DIR, split: train, resolution: 480p}``: a DAVIS-style folder (JPEG
  frames + annotation PNGs; the resolution folder found on disk by default).
- ``{kind: ytvis, root: DIR, annotations: FILE.json}``: YouTube-VIS style (JPEGs + RLE JSON).

Generated videos (synthetic, real) are drawn at the model's input size; the video of batch
position b at iteration i is number ``i * batch + b`` of the split. Dataset videos are
resized to the model's input (frames bilinear, masks nearest) and random clips are cut from
them; the choice is a pure function of (iteration, position in batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ausm_stream.errors import InvalidInputError
from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.data.formats import read_davis, read_ytvis, resize_video
from ausm_stream.model.data.real import RealSpec, generate_real_video
from ausm_stream.model.data.synthetic import ShapesSpec, generate_video
from ausm_stream.model.data.video import Video


class ClipSource(Protocol):
    def clips(self, iteration: int, batch: int, frames: int) -> list[Video]: ...


GENERATORS: dict[str, tuple[type, Callable[..., Video]]] = {
    "synthetic": (ShapesSpec, generate_video),
    "real": (RealSpec, generate_real_video),
}
"""Generated kinds of training data: their spec class and their ``(split, index, spec)``."""


@dataclasses.dataclass
class GeneratedSource:
    """Fresh generated videos: batch position b of iteration i is video ``i * batch + b``."""

    kind: str
    spec: ShapesSpec | RealSpec
    split: str = "train"

    def clips(self, iteration: int, batch: int, frames: int) -> list[Video]:
        spec = dataclasses.replace(self.spec, frames=frames)
        generate = GENERATORS[self.kind][1]
        return [generate(self.split, iteration * batch + b, spec) for b in range(batch)]


@dataclasses.dataclass
class DatasetSource:
    videos: list[Video]

    def clips(self, iteration: int, batch: int, frames: int) -> list[Video]:
        out = []
        for b in range(batch):
            rng = np.random.default_rng([iteration, b])
            candidates = [v for v in self.videos if v.num_frames >= frames]
            if not candidates:
                raise InvalidInputError(f"no video has {frames} frames for a training clip")
            video = candidates[int(rng.integers(len(candidates)))]
            start = int(rng.integers(video.num_frames - frames + 1))
            out.append(video.clip(start, frames))
        return out


def build_source(data: dict[str, Any], cfg: AUSMConfig) -> ClipSource:
    options = dict(data)
    kind = options.pop("kind", "synthetic")
    if kind in GENERATORS:
        split = options.pop("split", "train")
        try:
            spec = GENERATORS[kind][0](size=cfg.image_size, **options)
            return GeneratedSource(kind, spec, split)
        except TypeError as exc:
            raise InvalidInputError(f"train config data: {exc}") from exc
    if kind == "davis":
        videos = read_davis(
            Path(options.pop("root")), options.pop("split", None), options.pop("resolution", None)
        )
    elif kind == "ytvis":
        videos = read_ytvis(Path(options.pop("annotations")), Path(options.pop("root")))
    else:
        raise InvalidInputError(
            f"train config data.kind {kind!r}: use synthetic, real, davis or ytvis"
        )
    if options:
        raise InvalidInputError(f"train config data: unknown option(s) {sorted(options)}")
    return DatasetSource([resize_video(v, cfg.image_size) for v in videos])


def videos_from_spec(spec: str, size: tuple[int, int]) -> list[Video]:
    """Evaluation videos named on the command line.

    ``synthetic[:split[:count[:frames]]]`` (default ``synthetic:test:50:24``),
    ``real[:split[:count[:frames]]]`` (default ``real:test:50:24``, see :mod:`.real`),
    ``davis:ROOT[:split[:resolution]]`` (``davis:ROOT::240p``: every video, at 240p) or
    ``ytvis:ANNOTATIONS.json:IMAGE_ROOT``.
    """
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind in ("synthetic", "real"):
        split = parts[0] if parts else "test"
        try:
            count = int(parts[1]) if len(parts) > 1 else 50
            frames = int(parts[2]) if len(parts) > 2 else 24
        except ValueError as exc:
            raise InvalidInputError(f"--data {spec!r}: count and frames must be integers") from exc
        if kind == "real":
            real = RealSpec(size=size, frames=frames)
            return [generate_real_video(split, i, real) for i in range(count)]
        return [
            generate_video(split, i, ShapesSpec(size=size, frames=frames)) for i in range(count)
        ]
    if kind == "davis" and parts:
        split = (parts[1] or None) if len(parts) > 1 else None
        resolution = parts[2] if len(parts) > 2 else None
        return read_davis(Path(parts[0]), split, resolution)
    if kind == "ytvis" and len(parts) == 2:
        return read_ytvis(Path(parts[0]), Path(parts[1]))
    raise InvalidInputError(
        f"--data {spec!r}: use synthetic[:split[:count[:frames]]], real[:split[:count[:frames]]], "
        "davis:ROOT[:split[:resolution]] or ytvis:ANNOTATIONS.json:IMAGE_ROOT"
    )
