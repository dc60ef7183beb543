"""Paging states between tiers never changes a stream's outputs; states are stored compactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ausm_stream.model import AUSM, DEFAULT_WEIGHTS, StreamState
from ausm_stream.model.data.sources import videos_from_spec
from ausm_stream.model.evaluation.runner import evaluate
from ausm_stream.operators.processor import StreamProcessor
from ausm_stream.operators.residency import StateResidency
from ausm_stream.pipeline.records import FrameChunk, PromptRecord
from tests.conftest import disc_mask, make_model

SIZE = (64, 64)
STREAMS = [f"cam-{i}" for i in range(10)]


def chunk(stream: str, first: int, n: int) -> FrameChunk:
    rng = np.random.default_rng([first, *stream.encode()])
    idx = np.arange(first, first + n)
    return FrameChunk(
        stream,
        idx,
        idx * 10,
        idx + 10**18,
        64,
        64,
        rng.integers(0, 255, (n, *SIZE, 3), dtype=np.uint8),
    )


def run(model, **residency) -> tuple[list[tuple], dict[str, bytes], StreamProcessor]:
    """Ten streams, each prompted, fed in turns of 3 frames; the outputs and final states."""
    out: list[tuple] = []

    def emit(f) -> None:
        out.append(
            (
                f.stream_id,
                f.frame_idx,
                f.track_ids.tobytes(),
                f.scores.tobytes(),
                f.masks.tobytes(),
            )
        )

    p = StreamProcessor(model, emit, max_batch=3, **residency)
    for i, sid in enumerate(STREAMS):
        mask = disc_mask(SIZE, 20 + 2 * i, 30, 8).numpy()[None]
        p.on_record(PromptRecord(sid, 0, [1], mask))
    for sid in STREAMS:  # frames arrive while others step
        p.on_record(chunk(sid, 0, 3))
        p.step_ready()
    for first in (3, 6):  # a backlog of every stream
        for sid in STREAMS:
            p.on_record(chunk(sid, first, 3))
        p.drain()
    return out, {sid: p.states.copy(sid).to_bytes() for sid in STREAMS}, p


def test_paged_states_give_the_outputs_of_all_resident():
    model = make_model(image_size=SIZE, fg_threshold=0.6)
    reference, ref_states, _ = run(model)
    paged, states, p = run(model, resident_streams=3)
    assert len(reference) == len(STREAMS) * 9
    assert any(len(np.frombuffer(r[2], np.int64)) for r in reference)  # tracks to compare
    assert sorted(paged) == sorted(reference)  # bit for bit, frame by frame
    assert states == ref_states
    stats = p.states.stats
    assert stats.page_outs > len(STREAMS) and stats.page_ins > 0
    assert stats.prefetched > 0  # queued streams were decoded ahead of their turn
    assert p.states.resident_count <= 3
    assert p.states.host_count == len(STREAMS) - p.states.resident_count
    assert 0 < p.states.host_bytes < stats.raw_bytes  # compressed


def test_the_host_budget_names_the_least_recently_stepped_to_store():
    model = make_model(image_size=SIZE)
    r = StateResidency(model.cfg, model.device, resident=1)
    for i in range(5):
        r.put(f"s{i}", model.init_state(i))  # each put pages the previous one out
    assert [r.tier(f"s{i}") for i in range(5)] == ["host"] * 4 + ["resident"]
    everyone = {f"s{i}" for i in range(5)}
    assert r.over_budget(everyone.__contains__) == []  # no budget
    blob = r.host_bytes / 4
    r.host_limit = int(2.5 * blob)  # room for two and a half
    assert r.over_budget(everyone.__contains__) == ["s0", "s1"]
    assert r.over_budget(movable={"s3"}.__contains__) == ["s3"]  # only streams the worker can move
    r.batch(["s0"])  # stepped again: it is now the most recent
    assert r.tier("s0") == "resident" and r.tier("s4") == "host"
    with pytest.raises(ValueError, match="exceeds 1 resident"):
        r.batch(["s1", "s2"])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_compact_state_is_stored_in_its_dtype_and_round_trips(dtype):
    model = make_model(image_size=SIZE, state_dtype=dtype)
    state = model.init_state(3)
    frames = torch.from_numpy(np.stack([chunk("x", 0, 4).frames]))[0]
    for frame in frames:
        model.step([state], frame[None])
    assert {state.x_prev.dtype, state.conv.dtype, state.ssm.dtype} == {getattr(torch, dtype)}
    wide = make_model(image_size=SIZE)
    assert state.to_bytes().__len__() < 0.6 * len(wide.init_state(3).to_bytes())
    again = StreamState.from_bytes(state.to_bytes(), model.cfg)
    assert again.to_bytes() == state.to_bytes()
    # A float32 checkpoint loads into a compact worker, rounded like a step would round it.
    widened = StreamState.from_bytes(again.to_bytes(), wide.cfg)
    assert widened.ssm.dtype == torch.float32
    assert torch.equal(widened.ssm.to(getattr(torch, dtype)), state.ssm)


DIGEST = """
import hashlib, sys, numpy as np, torch
from tests.conftest import make_frames, make_model
torch.set_num_threads(1)
model = make_model(image_size=(64, 64), fg_threshold=0.6, state_dtype=sys.argv[1])
state, h = model.init_state(5), hashlib.sha256()
for frame in make_frames(6, seed=2, size=(64, 64)):
    r = model.step([state], frame[None])[0]
    h.update(r.masks.numpy().tobytes() + r.scores.numpy().tobytes())
print(hashlib.sha256(h.digest() + state.to_bytes()).hexdigest())
"""


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_compact_state_gives_the_same_bytes_in_another_process(dtype):
    def digest() -> str:
        out = subprocess.run(
            [sys.executable, "-c", DIGEST, dtype], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    first = digest()
    assert len(first) == 64 and digest() == first


def documented_figures() -> dict[str, tuple[float, float, float]]:
    """The README's table of what each state dtype costs: J&F, AP, AP50."""
    rows = {}
    for line in (Path(__file__).parents[2] / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].split(" ")[0] in ("float32", "float16", "bfloat16"):
            rows[cells[0].split(" ")[0]] = tuple(float(c) for c in cells[2:5])
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_documented_quality_of_a_compact_state_reproduces(dtype):
    figures = documented_figures()
    assert set(figures) == {"float32", "float16", "bfloat16"}
    model = AUSM.from_weights(DEFAULT_WEIGHTS, state_dtype=dtype)
    videos = videos_from_spec("synthetic:test:50:24", model.cfg.image_size)
    report = evaluate(model, videos, progress=False)
    got = (round((report.j + report.f) / 2, 3), round(report.ap, 3), round(report.ap50, 3))
    assert got == figures[dtype]
