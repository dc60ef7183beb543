"""Exports that other tools read: YouTube-VIS JSON read back gives the same masks; MOTS and
MOT files are read and scored by TrackEval against ground truth exported the same way from
a synthetic video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trackeval

from ausm_stream.errors import InvalidInputError
from ausm_stream.model import load_model
from ausm_stream.model.data.synthetic import ShapesSpec, generate_video
from ausm_stream.operators.processor import StreamProcessor
from ausm_stream.pipeline.exports import categories, class_ids, exclusive, read_youtube_vis
from ausm_stream.pipeline.geometry import Placement
from ausm_stream.pipeline.query import TrackDataset
from ausm_stream.pipeline.records import FrameChunk
from ausm_stream.pipeline.sinks import ParquetSink, TrackSinks
from ausm_stream.pipeline.storage import FileStore
from ausm_stream.pipeline.tracks import FrameTracks

SOURCE = (96, 128)
FRAMES = 16
STREAMS = ("cam-a", "cam-b")


def stamps(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n) * 125_000_000, np.arange(n) * 125_000_000 + 1_764_900_000 * 10**9


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[FileStore, FileStore, dict[str, int]]:
    """The ground truth of two synthetic videos and the shipped model's tracks of them,
    each written by the real sink."""
    root = tmp_path_factory.mktemp("exports")
    truth, tracked = FileStore(root / "truth"), FileStore(root / "model")
    model, version = load_model("default")
    truth_sinks = TrackSinks("truth", parquet=ParquetSink(truth, "truth", 8))
    model_sinks = TrackSinks(version, parquet=ParquetSink(tracked, version, 8))
    processor = StreamProcessor(model, model_sinks.add)
    pts, capture = stamps(FRAMES)
    truth_rows = {}
    for i, sid in enumerate(STREAMS):
        video = generate_video("test", 10 + i, ShapesSpec(size=SOURCE, frames=FRAMES))
        truth_rows[sid] = 0
        for t in range(FRAMES):
            seen = video.masks[t].any(axis=(1, 2))
            masks = video.masks[t][seen]
            truth_sinks.add(
                FrameTracks(
                    sid,
                    t,
                    int(pts[t]),
                    int(capture[t]),
                    *SOURCE,
                    np.nonzero(seen)[0] + 1,
                    [video.class_names[c] for c in video.classes[seen]],
                    np.ones(len(masks), np.float32),
                    masks,
                    np.full(len(masks), -1),
                )
            )
            truth_rows[sid] += len(masks)
        truth_sinks.end(sid)
        place = Placement.fit(SOURCE, model.cfg.image_size, "letterbox")
        frames = np.stack([place.place(_resize(f, place)) for f in video.frames])
        processor.on_record(
            FrameChunk(sid, np.arange(FRAMES), pts, capture, *SOURCE, frames, place.content)
        )
        processor.drain()
        model_sinks.end(sid)
    return truth, tracked, truth_rows


def _resize(frame: np.ndarray, place: Placement) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((place.width, place.height), Image.BILINEAR))


def trackeval_scores(kind: str, gt: Path, tracker: Path, seqs: dict[str, int]) -> dict:
    """TrackEval's HOTA, CLEAR, Identity and Count figures, all sequences combined."""
    common = {
        "GT_FOLDER": str(gt),
        "TRACKERS_FOLDER": str(tracker.parent),
        "TRACKERS_TO_EVAL": [tracker.name],
        "TRACKER_SUB_FOLDER": "",
        "OUTPUT_FOLDER": str(tracker.parent / "out"),
        "SKIP_SPLIT_FOL": True,
        "SEQ_INFO": dict(seqs),
        "GT_LOC_FORMAT": "{gt_folder}/{seq}.txt",
        "PRINT_CONFIG": False,
    }
    if kind == "mots":
        dataset = trackeval.datasets.MOTSChallenge(common)
    else:
        dataset = trackeval.datasets.MotChallenge2DBox({**common, "DO_PREPROC": False})
    evaluator = trackeval.Evaluator(
        {
            "USE_PARALLEL": False,
            "PRINT_RESULTS": False,
            "PRINT_CONFIG": False,
            "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "BREAK_ON_ERROR": True,
            "RETURN_ON_ERROR": False,
        }
    )
    quiet = {"PRINT_CONFIG": False}
    metrics = [
        trackeval.metrics.HOTA(),
        trackeval.metrics.CLEAR(quiet),
        trackeval.metrics.Identity(quiet),
    ]  # the evaluator adds Count itself
    results, _ = evaluator.evaluate([dataset], metrics)
    (per_dataset,) = results.values()
    combined = per_dataset[tracker.name]["COMBINED_SEQ"]["pedestrian"]
    return {
        "HOTA": float(np.mean(combined["HOTA"]["HOTA"])),
        "MOTA": float(combined["CLEAR"]["MOTA"]),
        "IDF1": float(combined["Identity"]["IDF1"]),
        "gt_dets": int(combined["Count"]["GT_Dets"]),
        "dets": int(combined["Count"]["Dets"]),
    }


@pytest.mark.parametrize(("kind", "class_id"), [("mots", 2), ("mot", 1)])
def test_trackeval_scores_the_exports(stores, tmp_path, kind, class_id):
    truth, tracked, truth_rows = stores
    pedestrian = [f"*={class_id}"]  # TrackEval's MOT benchmarks score "pedestrian" only
    with TrackDataset(truth) as data:
        data.export(kind, tmp_path / "gt", class_pairs=pedestrian, ground_truth=True)
        data.export(kind, tmp_path / "trackers" / "truth", class_pairs=pedestrian)
    with TrackDataset(tracked) as data:
        report = data.export(kind, tmp_path / "trackers" / "ausm", class_pairs=pedestrian)
        stored = data.query("SELECT count(*) AS n FROM tracks").to_pylist()[0]["n"]
    assert [p.name for p in report.files] == [f"{s}.txt" for s in STREAMS]
    # every row is written or, in MOTS, counted as hidden under a higher-scoring mask
    assert report.rows + report.hidden == stored and (kind == "mots" or report.hidden == 0)
    seqs = dict.fromkeys(STREAMS, FRAMES)
    # the truth scored against itself: the format is read whole and matched exactly
    perfect = trackeval_scores(kind, tmp_path / "gt", tmp_path / "trackers" / "truth", seqs)
    assert perfect["gt_dets"] == perfect["dets"] == sum(truth_rows.values())
    assert perfect["HOTA"] == pytest.approx(1.0) and perfect["MOTA"] == pytest.approx(1.0)
    # the model: every row it wrote is read, and it tracks the objects, imperfectly
    got = trackeval_scores(kind, tmp_path / "gt", tmp_path / "trackers" / "ausm", seqs)
    assert got["gt_dets"] == sum(truth_rows.values()) and got["dets"] == report.rows
    assert 0.3 < got["HOTA"] < 1.0 and 0.2 < got["MOTA"] < 1.0 and got["IDF1"] > 0.4, got


def test_youtube_vis_results_read_back_give_the_same_masks(stores, tmp_path):
    _, tracked, _ = stores
    with TrackDataset(tracked) as data:
        report = data.export("ytvis", tmp_path)
        back = read_youtube_vis(tmp_path / "results.json")
        tracks = data.query("SELECT DISTINCT stream_id, track_id FROM tracks").to_pylist()
        assert len(back) == len(tracks) and report.rows > 0
        for t in tracks:
            want = data.track_masks(t["stream_id"], t["track_id"])
            frames, masks = back[(t["stream_id"], t["track_id"])]
            assert np.array_equal(frames, want.frame_idx)
            assert np.array_equal(masks, want.masks)


def test_class_ids_and_overlaps():
    assert class_ids(["square", "circle", "square"]) == {"circle": 1, "square": 2}
    assert class_ids(["square", "circle"], ["*=2", "circle=7"]) == {"circle": 7, "square": 2}
    # YouTube-VIS wants one category per id: labels sharing one are named together
    shared = class_ids(["square", "circle", "ring"], ["*=1"])
    assert categories(shared) == [{"id": 1, "name": "circle/ring/square"}]
    assert categories(class_ids(["square", "circle"])) == [
        {"id": 1, "name": "circle"},
        {"id": 2, "name": "square"},
    ]
    with pytest.raises(InvalidInputError, match="LABEL=ID"):
        class_ids(["circle"], ["circle"])
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = masks[1, 1:3] = True  # row 1 claimed by both
    out = exclusive(masks, np.array([0.5, 0.9], np.float32))
    assert not (out[0] & out[1]).any() and out[1, 1].all() and out[0, 0].all()
    assert not out[0, 1].any()
