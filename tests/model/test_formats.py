"""read_davis on the layouts and PNG modes DAVIS copies come in, written small by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ausm_stream.model.data.formats import _palette, read_annotations, read_davis

H, W = 4, 6


def labels(t: int) -> np.ndarray:
    """Frame t's label map: object A (label 1) on the left, B (label 2) on the right from
    frame 1 on."""
    lab = np.zeros((H, W), dtype=np.uint8)
    lab[1:3, 0:2] = 1
    if t >= 1:
        lab[0:2, 4:6] = 2
    return lab


def expected(frames: int = 3) -> np.ndarray:
    """(T, 2, H, W): object 1 is label 1, object 2 label 2, whatever the file encodes them as."""
    return np.stack([np.stack([labels(t) == 1, labels(t) == 2]) for t in range(frames)])


def make_davis(
    root: Path,
    encode,
    res: str = "480p",
    name: str = "clip",
    frames: int = 3,
    sets: tuple[str, str] = ("2017", "val"),
) -> None:
    """A DAVIS folder with one video; ``encode(label_map) -> PIL image`` writes its PNGs."""
    img_dir = root / "JPEGImages" / res / name
    ann_dir = root / "Annotations" / res / name
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    for t in range(frames):
        Image.new("RGB", (W, H), (t * 40, 80, 120)).save(img_dir / f"{t:05d}.jpg")
        encode(labels(t)).save(ann_dir / f"{t:05d}.png")
    folder = root / "ImageSets" / sets[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{sets[1]}.txt").write_text(f"{name}\n")


def palette_png(lab: np.ndarray) -> Image.Image:
    img = Image.fromarray(lab).convert("P")
    img.putpalette(_palette())
    return img


def grey_png(lab: np.ndarray) -> Image.Image:
    # DAVIS 2016 style grey levels: 0 background, objects 128 and 255
    return Image.fromarray(np.choose(lab, [0, 128, 255]).astype(np.uint8))


def grey_alpha_png(lab: np.ndarray) -> Image.Image:
    return grey_png(lab).convert("LA")


def colour_png(lab: np.ndarray, alpha: bool = False) -> Image.Image:
    pal = np.array(_palette(), dtype=np.uint8).reshape(256, 3)
    img = Image.fromarray(pal[lab])
    return img.convert("RGBA") if alpha else img


def sixteen_bit_png(lab: np.ndarray) -> Image.Image:
    # labels far apart and beyond 8 bits: 300 and 40000
    return Image.fromarray(np.choose(lab, [0, 300, 40000]).astype(np.uint16))


@pytest.mark.parametrize(
    ("mode", "encode"),
    [
        ("P", palette_png),
        ("L", grey_png),
        ("LA", grey_alpha_png),
        ("RGB", colour_png),
        ("RGBA", lambda lab: colour_png(lab, True)),
    ],
)
def test_every_png_mode_reads_as_the_same_objects(tmp_path, mode, encode):
    make_davis(tmp_path, encode)
    assert Image.open(tmp_path / "Annotations/480p/clip/00001.png").mode == mode
    (video,) = read_davis(tmp_path, "val")
    assert video.name == "clip" and video.frames.shape == (3, H, W, 3)
    assert np.array_equal(video.masks, expected())
    assert video.classes.tolist() == [0, 0]


def test_sixteen_bit_png(tmp_path):
    img = sixteen_bit_png(labels(2))
    img.save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    masks = read_annotations([tmp_path / "a.png"], (H, W))
    assert np.array_equal(masks, expected()[2:])


def test_davis_2016_grey_mask_is_object_one_not_255(tmp_path):
    # One object at 255, as DAVIS 2016 ships it; the 240p folder and ImageSets/2016 as in
    # vos-dev. The object is absent from frame 0 (a value seen in some frame counts).
    def one_object(lab):
        return Image.fromarray(((lab == 2) * 255).astype(np.uint8))

    make_davis(tmp_path, one_object, res="240p", sets=("2016", "all"))
    (video,) = read_davis(tmp_path, "all")
    assert video.num_instances == 1
    assert np.array_equal(video.masks[:, 0], expected()[:, 1])
    assert not video.masks[0].any()


def test_palette_void_is_background_unless_it_is_the_only_label(tmp_path):
    def with_void(lab):
        lab = lab.copy()
        lab[3, :] = 255  # a void border, as DAVIS 2017 marks it
        return palette_png(lab)

    make_davis(tmp_path / "a", with_void)
    (video,) = read_davis(tmp_path / "a", "val")
    assert np.array_equal(video.masks, expected())

    def only_255(lab):
        return palette_png(((lab == 1) * 255).astype(np.uint8))

    make_davis(tmp_path / "b", only_255)
    (video,) = read_davis(tmp_path / "b", "val")
    assert video.num_instances == 1 and np.array_equal(video.masks[:, 0], expected()[:, 0])


def test_colours_outside_the_davis_palette_are_objects_too(tmp_path):
    paths = []
    for t, colours in enumerate([[(0, 0, 0), (10, 200, 30)], [(0, 0, 0), (10, 200, 31)]]):
        rgb = np.zeros((H, W, 3), dtype=np.uint8)
        rgb[:2] = colours[1]
        paths.append(tmp_path / f"{t}.png")
        Image.fromarray(rgb).save(paths[-1])
    masks = read_annotations(paths, (H, W))
    assert masks.shape == (2, 2, H, W)  # two distinct colours: two objects
    assert masks[0, 0, :2].all() and not masks[0, 1].any() and masks[1, 1, :2].all()


def test_resolution_folder_choice(tmp_path):
    make_davis(tmp_path, palette_png, res="240p")
    assert read_davis(tmp_path, "val")[0].size == (H, W)  # the only one there
    make_davis(tmp_path, palette_png, res="Full-Resolution", name="other")
    with pytest.raises(ValueError, match="choose one of the resolutions 240p, Full-Resolution"):
        read_davis(tmp_path)
    assert [v.name for v in read_davis(tmp_path, None, "Full-Resolution")] == ["other"]
    make_davis(tmp_path, palette_png, res="480p", name="third")
    assert [v.name for v in read_davis(tmp_path)] == ["third"]  # 480p among several
    with pytest.raises(ValueError, match="no resolution '1080p'"):
        read_davis(tmp_path, None, "1080p")


def test_split_files_of_2017_2016_and_2016_frame_lists(tmp_path):
    make_davis(tmp_path, palette_png, name="a", sets=("2016", "val"))
    make_davis(tmp_path, palette_png, name="b", sets=("2017", "val"))
    assert [v.name for v in read_davis(tmp_path, "val")] == ["b"]  # 2017 first
    assert [v.name for v in read_davis(tmp_path, "2016/val")] == ["a"]
    # DAVIS 2016's own lists: frame paths under ImageSets/<resolution>, a video per folder
    (tmp_path / "ImageSets" / "480p").mkdir()
    (tmp_path / "ImageSets" / "480p" / "train.txt").write_text(
        "".join(
            f"/JPEGImages/480p/{n}/{t:05d}.jpg /Annotations/480p/{n}/{t:05d}.png\n"
            for n in ("b", "a")
            for t in range(3)
        )
    )
    assert [v.name for v in read_davis(tmp_path, "train")] == ["b", "a"]
    with pytest.raises(ValueError, match=r"ImageSets/2017/test\.txt, ImageSets/2016/test\.txt"):
        read_davis(tmp_path, "test")


def test_annotation_problems_are_named(tmp_path):
    make_davis(tmp_path, palette_png)
    ann = tmp_path / "Annotations" / "480p" / "clip"
    Image.new("L", (W + 1, H)).save(ann / "00001.png")
    with pytest.raises(ValueError, match=r"00001\.png is 7x4 .* its frame 6x4"):
        read_davis(tmp_path)
    Image.new("L", (W, H)).save(ann / "00001.png")  # grey beside palette files
    with pytest.raises(ValueError, match="mix grey and index PNGs"):
        read_davis(tmp_path)
    Image.new("F", (W, H)).save(ann / "00001.tiff")
    with pytest.raises(ValueError, match="PNG mode F"):
        read_annotations([ann / "00001.tiff"], (H, W))
    (ann / "00001.png").unlink()  # a frame without annotation has no object in it
    (video,) = read_davis(tmp_path)
    assert not video.masks[1].any() and np.array_equal(video.masks[2], expected()[2])
