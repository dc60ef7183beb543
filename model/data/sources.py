"""Clip sources for training: where the videos of each iteration come from.

``data`` in the training config picks one:

- ``{kind: synthetic, ...ShapesSpec fields}``: fresh synthetic videos every iteration.
- ``{kind: davis, root: DIR, split: train}``: a DAVIS-style folder (JPEG frames + indexed PNGs).
- ``{kind: ytvis, root: DIR, annotations: FILE.json}``: YouTube-VIS style (JPEGs + RLE JSON).

Real videos are resized to the model's input (frames bilinear, masks nearest) and random
clips are cut from them; the choice is a pure function of (iteration, position in batch).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ausm_stream.errors import InvalidInputError
from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.data.formats import read_davis, read_ytvis, resize_video
from ausm_stream.model.data.synthetic import ShapesSpec, generate_video
from ausm_stream.model.data.video import Video


class ClipSource(Protocol):
    def clips(self, iteration: int, batch: int, frames: int) -> list[Video]: ...


@dataclasses.dataclass
class SyntheticSource:
    spec: ShapesSpec
    split: str = "train"

    def clips(self, iteration: int, batch: int, frames: int) -> list[Video]:
        spec = dataclasses.replace(self.spec, frames=frames)
        return [generate_video(self.split, iteration * batch + b, spec) for b in range(batch)]


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
    if kind == "synthetic":
        split = options.pop("split", "train")
        try:
            spec = ShapesSpec(size=cfg.image_size, **options)
        except TypeError as exc:
            raise InvalidInputError(f"train config data: {exc}") from exc
        return SyntheticSource(spec, split)
    if kind == "davis":
        videos = read_davis(Path(options.pop("root")), options.pop("split", None))
    elif kind == "ytvis":
        videos = read_ytvis(Path(options.pop("annotations")), Path(options.pop("root")))
    else:
        raise InvalidInputError(f"train config data.kind {kind!r}: use synthetic, davis or ytvis")
    if options:
        raise InvalidInputError(f"train config data: unknown option(s) {sorted(options)}")
    return DatasetSource([resize_video(v, cfg.image_size) for v in videos])


def videos_from_spec(spec: str, size: tuple[int, int]) -> list[Video]:
    """Evaluation videos named on the command line.

    ``synthetic[:split[:count[:frames]]]`` (default ``synthetic:test:50:24``),
    ``davis:ROOT[:split]`` or ``ytvis:ANNOTATIONS.json:IMAGE_ROOT``.
    """
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind == "synthetic":
        split = parts[0] if parts else "test"
        try:
            count = int(parts[1]) if len(parts) > 1 else 50
            frames = int(parts[2]) if len(parts) > 2 else 24
        except ValueError as exc:
            raise InvalidInputError(f"--data {spec!r}: count and frames must be integers") from exc
        return [
            generate_video(split, i, ShapesSpec(size=size, frames=frames)) for i in range(count)
        ]
    if kind == "davis" and parts:
        return read_davis(Path(parts[0]), parts[1] if len(parts) > 1 else None)
    if kind == "ytvis" and len(parts) == 2:
        return read_ytvis(Path(parts[0]), Path(parts[1]))
    raise InvalidInputError(
        f"--data {spec!r}: use synthetic[:split[:count[:frames]]], davis:ROOT[:split] or "
        "ytvis:ANNOTATIONS.json:IMAGE_ROOT"
    )
