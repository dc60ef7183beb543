"""Real-imagery videos: deterministic, split-disjoint, drawn from the pictures they name, with
masks that match what is drawn, and never made of the held-out vtest.avi."""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ausm_stream.errors import InvalidInputError
from ausm_stream.model.config import AUSMConfig
from ausm_stream.model.data import imagery
from ausm_stream.model.data.real import (
    Layer,
    Look,
    RealSpec,
    Scene,
    generate_real_video,
    plan_scene,
    render_scene,
)
from ausm_stream.model.data.sources import GeneratedSource, build_source, videos_from_spec
from ausm_stream.model.data.video import visible_masks

pytestmark = pytest.mark.skipif(
    not (imagery.OPENCV_DATA.is_dir() and imagery.MATE_NATURE.is_dir()),
    reason="needs the Debian packages opencv-doc and mate-backgrounds (make setup installs them)",
)

SPEC = RealSpec(size=(128, 224), frames=10)
PLANE = ndimage.generate_binary_structure(2, 1)[None]
"""Grows or shrinks (T, H, W) masks within each frame, not across frames."""


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped arrays (0 where either is flat)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom else 0.0


def gray(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64).mean(axis=-1)


def expected_backdrop(scene: Scene, t: int) -> np.ndarray:
    """The camera window of frame t, sampled from the source picture independently of the
    generator (scipy instead of PIL): gray (H, W)."""
    name = scene.backdrop.source
    source = imagery.load_clip(name) if "#" in name else imagery.load_picture(name)[None]
    cx, cy, s = scene.backdrop.camera[t]
    h, w = scene.size
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    coords = [cy - s * h / 2 + s * ys - 0.5, cx - s * w / 2 + s * xs - 0.5]
    return ndimage.map_coordinates(gray(source[scene.backdrop.frame_index[t]]), coords, order=1)


def expected_object(layer: Layer, t: int, size: tuple[int, int]) -> np.ndarray:
    """Layer t's sprite warped into the frame by its own centre, scale and angle (scipy)."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    dx, dy = xs - layer.centre[t, 0], ys - layer.centre[t, 1]
    c, s = np.cos(layer.angle[t]), np.sin(layer.angle[t])
    u = layer.sprite.anchor[0] + (c * dx + s * dy) / layer.scale[t]
    v = layer.sprite.anchor[1] + (-s * dx + c * dy) / layer.scale[t]
    return ndimage.map_coordinates(gray(layer.sprite.rgba[..., :3]), [v - 0.5, u - 0.5], order=1)


def test_same_index_same_video_other_index_differs():
    a, b = generate_real_video("train", 3, SPEC), generate_real_video("train", 3, SPEC)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert a.num_instances >= 1 and a.class_names == ("object",)
    assert not np.array_equal(a.frames, generate_real_video("train", 4, SPEC).frames)
    assert not np.array_equal(a.frames, generate_real_video("val", 3, SPEC).frames)
    with pytest.raises(InvalidInputError, match="unknown split"):
        generate_real_video("holdout", 0, SPEC)


def test_splits_never_share_a_picture():
    pools = {s: set(imagery.picture_names(s)) for s in ("train", "val", "test")}
    assert all(pools.values())
    assert not (pools["train"] & pools["val"] or pools["train"] & pools["test"])
    assert not pools["val"] & pools["test"]
    # One scene's views stay together: a stereo pair straddling splits would leak.
    for left, right in [("aero1.jpg", "aero3.jpg"), ("left.jpg", "right.jpg")]:
        assert any({f"opencv-doc:{left}", f"opencv-doc:{right}"} <= p for p in pools.values())
    for split in ("val", "test"):
        allowed = pools[split] | set(imagery.clip_names(split))
        for i in range(4):
            scene = plan_scene(split, i, SPEC)
            used = {scene.backdrop.source} | {la.sprite.source for la in scene.layers}
            assert used <= allowed


def test_backdrop_is_a_crop_of_the_named_picture():
    checked = 0
    for i in range(12):
        scene = plan_scene("train", i, SPEC)
        if "#" in scene.backdrop.source:
            continue
        frames, full = render_scene(scene)
        for t in (0, SPEC.frames - 1):  # the camera may have moved in between
            away = ~ndimage.binary_dilation(full[t].any(axis=0), iterations=12)
            expected = expected_backdrop(scene, t)
            assert corr(gray(frames[t])[away], expected[away]) > 0.9, scene.backdrop.source
        checked += 1
    assert checked >= 3
    noise = np.random.default_rng(0).integers(0, 256, (*SPEC.size, 3))
    assert abs(corr(gray(noise), expected)) < 0.1  # the check has teeth


def test_objects_are_real_pixels_drawn_where_their_path_says():
    scenes = [plan_scene("train", i, SPEC) for i in range(6)]
    for layer in [
        la for s in scenes for la in s.layers
    ]:  # each sprite is a crop of its picture (blobs: lightly shaded;
        x0, y0, x1, y1 = layer.sprite.box  # sprites always drawn small: shrunk beforehand)
        crop = Image.fromarray(imagery.load_picture(layer.sprite.source)[y0:y1, x0:x1])
        sh, sw, _ = layer.sprite.rgba.shape
        solid = layer.sprite.rgba[..., 3] >= 200  # resizing blacks out transparent pixels
        assert corr(np.asarray(crop.resize((sw, sh)))[solid], layer.sprite.rgba[solid, :3]) > 0.9
    scores = []
    for scene in scenes:
        frames, full = render_scene(scene)
        for k, layer in enumerate(scene.layers):
            inside = ndimage.binary_erosion(visible_masks(full)[0, k], iterations=2)
            if inside.sum() >= 100:
                drawn = expected_object(layer, 0, scene.size)
                scores.append(corr(gray(frames[0])[inside], drawn[inside]))
    assert len(scores) >= 4 and np.median(scores) > 0.85 and min(scores) > 0.5


def test_masks_are_what_is_drawn_in_depth_order():
    for i in range(4):
        scene = plan_scene("train", i, SPEC)
        scene = dataclasses.replace(  # shadows darken outside the masks, on purpose
            scene, layers=tuple(dataclasses.replace(la, shadow=None) for la in scene.layers)
        )
        frames, full = render_scene(scene)
        visible = visible_masks(full)
        assert visible.sum(axis=1).max() <= 1  # one owner per pixel
        backdrop, _ = render_scene(dataclasses.replace(scene, layers=()))
        changed = (frames != backdrop).any(axis=-1)
        # Far from every object the frame is the backdrop, bit for bit.
        far = ~ndimage.binary_dilation(full.any(axis=1), PLANE, iterations=12)
        assert not changed[far].any()
        for k in range(len(scene.layers)):
            without = dataclasses.replace(scene, layers=scene.layers[:k] + scene.layers[k + 1 :])
            without_k, _ = render_scene(without)
            change = np.abs(frames.astype(np.int16) - without_k).max(axis=-1)
            if visible[:, k].sum() >= 50:  # where k is visible, k is drawn
                assert (change[visible[:, k]] > 0).mean() > 0.9
            # Where k is hidden (away from the soft edge of what hides it), k left no trace but
            # for the rounding of an 8-bit alpha.
            hidden = ndimage.binary_erosion(full[:, k] & ~visible[:, k], PLANE, iterations=3)
            assert hidden.sum() == 0 or change[hidden].max() <= 2


def test_a_mask_is_where_the_drawn_alpha_reaches_one_half():
    scene = plan_scene("train", 1, SPEC)
    n = SPEC.frames
    clean = Look(np.ones((n, 3)), np.zeros(n), blur=0.0, noise=0.0, seed=0)
    for layer in scene.layers:

        def painted(value: int, layer: Layer = layer) -> tuple[np.ndarray, np.ndarray]:
            rgba = layer.sprite.rgba.copy()
            rgba[..., :3] = value
            sprite = dataclasses.replace(layer.sprite, rgba=rgba)
            alone = dataclasses.replace(layer, sprite=sprite, shadow=None)
            return render_scene(dataclasses.replace(scene, layers=(alone,), look=clean))

        (white, full), (black, _) = painted(255), painted(0)
        # white - black = 255 * alpha, whatever the backdrop: the alpha, measured from pixels
        alpha = (white.astype(np.int16) - black).mean(axis=-1) / 255
        assert full[:, 0].any() and (alpha[full[:, 0]] >= 0.5 - 0.01).all()
        assert (alpha[~full[:, 0]] < 0.5 + 0.01).all()
        assert ((alpha > 0.02) & (alpha < 0.98)).sum() > 0  # edges are soft, not cut-outs


def test_videos_hold_what_a_tracker_must_handle():
    spec = dataclasses.replace(SPEC, frames=16)
    scenes = [plan_scene("train", i, spec) for i in range(16)]
    videos = [generate_real_video("train", i, spec) for i in range(16)]
    spans = [(v, s) for v in videos for s in v.occlusions]
    assert spans
    for v, (k, first, last) in spans:  # hidden inside the span, visible on both sides
        assert not v.masks[first : last + 1, k].any()
        assert v.masks[first - 1, k].any() and v.masks[last + 1, k].any()
    assert any((~v.masks.any(axis=(2, 3))).any() for v in videos)  # enters or leaves
    assert any(v.num_instances >= 3 for v in videos)
    assert any(np.ptp(s.backdrop.camera, axis=0).max() > 1 for s in scenes)  # camera moves
    assert any(np.ptp(s.backdrop.camera, axis=0).max() == 0 for s in scenes)  # camera still
    assert any("#" in s.backdrop.source for s in scenes)  # a clip as backdrop
    assert any(np.ptp(la.scale) > 0.1 * la.scale.mean() for s in scenes for la in s.layers)


def test_vtest_is_never_used(monkeypatch):
    names = [n for s in ("train", "val", "test") for n in imagery.picture_names(s)]
    names += [n for s in ("train", "val", "test") for n in imagery.clip_names(s)]
    assert not [n for n in names if "vtest" in n]
    with pytest.raises(InvalidInputError, match="held-out"):
        imagery.load_clip("opencv-doc:vtest.avi#0")
    opened = []
    real_open = av.open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    imagery._decode.cache_clear()  # so that every clip is opened again, through the spy
    imagery._shots.cache_clear()
    for split in ("train", "test"):
        for i in range(3):
            generate_real_video(split, i, dataclasses.replace(SPEC, clip_prob=1.0))
    assert opened and not [f for f in opened if f.endswith("vtest.avi")]


def test_missing_imagery_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(imagery, "OPENCV_DATA", tmp_path / "absent")
    with pytest.raises(InvalidInputError, match="apt-get install opencv-doc"):
        generate_real_video("train", 0, SPEC)
    monkeypatch.undo()
    monkeypatch.setattr(imagery, "MATE_NATURE", tmp_path)
    with pytest.raises(InvalidInputError, match="mate-backgrounds"):
        imagery.picture_names("val")


def test_training_config_and_command_line_reach_the_generator():
    source = build_source({"kind": "real", "max_objects": 2}, AUSMConfig(image_size=(64, 112)))
    assert isinstance(source, GeneratedSource) and source.kind == "real"
    clips = source.clips(iteration=1, batch=2, frames=6)
    assert [c.frames.shape for c in clips] == [(6, 64, 112, 3)] * 2
    assert all(1 <= c.num_instances <= 2 + 1 for c in clips)  # + a scripted occluder
    videos = videos_from_spec("real:val:2:5", (64, 112))
    assert [v.name for v in videos] == ["real-val-000000", "real-val-000001"]
    assert videos[0].frames.shape == (5, 64, 112, 3)
    with pytest.raises(InvalidInputError, match="train config data"):
        build_source({"kind": "real", "sparkle": 1}, AUSMConfig())


CUTOUTS = dataclasses.replace(SPEC, cutout_prob=1.0, street_prob=1.0, clip_prob=0.0)
needs_scratch = pytest.mark.skipif(
    not imagery.SCRATCH_MEDIA.is_dir(), reason="needs Debian's scratch (make setup installs it)"
)


@needs_scratch
def test_cutouts_and_street_backdrops_keep_one_subject_in_one_split():
    splits = ("train", "val", "test")
    for names in (imagery.cutout_names, imagery.street_names):
        pools = {s: set(names(s)) for s in splits}
        assert all(pools.values())
        assert not (pools["train"] & pools["val"] or pools["train"] & pools["test"])
        assert not pools["val"] & pools["test"]
    people = {s: {n for n in imagery.cutout_names(s) if "/People/" in n} for s in splits}
    assert len(people["train"]) >= 20
    for person in ("anjuli-", "cassy-", "dan"):  # one person's poses never straddle splits
        assert sum(any(f"/People/{person}" in n for n in people[s]) for s in splits) == 1
    rgb, mask = imagery.load_cutout(sorted(people["train"])[0])
    assert rgb.shape[:2] == mask.shape and mask.dtype == bool
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()  # cropped
    assert 0.2 < mask.mean() < 0.9  # a silhouette, not a rectangle


@needs_scratch
def test_cutout_objects_are_their_photographs_upright_over_street_backdrops():
    scenes = [plan_scene("train", i, CUTOUTS) for i in range(6)]
    cutouts = set(imagery.cutout_names("train"))
    checked = 0
    for scene in scenes:
        assert scene.backdrop.source in imagery.street_names("train")
        for layer in scene.layers:
            if layer.sprite.source not in cutouts:  # a scripted occluder is a blob
                continue
            assert layer.sprite.upright and np.ptp(layer.angle) == 0
            assert abs(layer.angle[0]) <= 0.06
            rgb, mask = imagery.load_cutout(layer.sprite.source)
            sh, sw, _ = layer.sprite.rgba.shape
            solid = layer.sprite.rgba[..., 3] >= 200
            pad = round(4 * sw / (mask.shape[1] + 8))
            inner = (slice(pad, sh - pad), slice(pad, sw - pad))
            photo = np.asarray(Image.fromarray(rgb).resize((sw - 2 * pad, sh - 2 * pad)))
            best = max(  # mirrored half the time
                corr(view[solid[inner]], layer.sprite.rgba[inner][solid[inner], :3])
                for view in (photo, photo[:, ::-1])
            )
            assert best > 0.9, layer.sprite.source
            checked += 1
    assert checked >= 6
    again = generate_real_video("train", 2, CUTOUTS)
    assert np.array_equal(again.frames, generate_real_video("train", 2, CUTOUTS).frames)
    # The default spec draws nothing of Scratch: earlier recipes' videos stay as they were.
    for i in range(6):
        scene = plan_scene("train", i, SPEC)
        sources = {scene.backdrop.source, *(la.sprite.source for la in scene.layers)}
        assert not [s for s in sources if s.startswith("scratch:")]


def test_grouped_objects_walk_beside_the_one_before():
    spec = dataclasses.replace(
        CUTOUTS, min_objects=3, max_objects=3, group_prob=1.0, occlusion_prob=0.0
    )
    touching = 0
    for i in range(4):
        scene = plan_scene("train", i, spec)
        for a, b in zip(scene.layers, scene.layers[1:], strict=False):
            extent = 2 * a.sprite.radius * a.scale  # (T,) frame pixels
            apart = np.linalg.norm(b.centre - a.centre, axis=1)
            assert (apart <= 0.8 * extent).all()  # beside it all along, not on its own path
            size = (b.sprite.radius * b.scale) / (a.sprite.radius * a.scale)
            assert ((size > 0.8) & (size < 1.2)).all()
        video = generate_real_video("train", i, spec)
        near = ndimage.binary_dilation(video.masks[:, 0], iterations=2)
        touching += int((near & video.masks[:, 1]).any())
    assert touching >= 2  # neighbours whose masks meet: what the tracker must tell apart
