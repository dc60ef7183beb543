"""Training: parallel and iterative agree, losses fall, a resumed run continues exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ausm_stream.model import AUSM, AUSMConfig
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.model.training.loop import TrainConfig, forward_iterative, train
from ausm_stream.model.training.objective import clip_loss
from ausm_stream.model.training.teacher import make_batch

SMALL = {"preset": "tiny", "image_size": [64, 64], "n_id": 8, "n_det": 8}


def small_batch(cfg: AUSMConfig, frames: int = 5):
    spec = ShapesSpec(size=cfg.image_size, frames=frames, min_radius=5, max_radius=12)
    videos = [generate_video("train", i, spec) for i in range(2)]
    return make_batch(videos, cfg, np.random.default_rng(0))


def test_teacher_forcing_targets_follow_switch_times():
    cfg = AUSMConfig.preset("tiny", image_size=(64, 64), n_id=8, n_det=8)
    batch = small_batch(cfg, frames=6)
    for b, per_frame in enumerate(batch.targets):
        for t, tgt in enumerate(per_frame):
            active = set(batch.history_active[b, t].nonzero().flatten().tolist())
            assert set(tgt.track) == active  # tracked slots are exactly the history's slots
            if t == 0:
                assert not active  # nothing can be in the history before the first frame
            for slot in active:  # history holds the previous frame's ground truth
                assert batch.history_masks[b, t, slot].any() or tgt.track[slot][0] in (
                    -1,
                    0,
                    1,
                    2,
                    3,
                )


def test_parallel_and_iterative_training_give_the_same_loss():
    torch.manual_seed(0)
    cfg = AUSMConfig.preset("tiny", image_size=(64, 64), n_id=8, n_det=8)
    model = AUSM(cfg).train()
    batch = small_batch(cfg)
    par, _ = clip_loss(
        model.forward_parallel(batch.frames, batch.history_masks, batch.history_active), batch, cfg
    )
    it, _ = clip_loss(forward_iterative(model, batch), batch, cfg)
    assert abs(float(par.detach()) - float(it.detach())) <= 1e-3 * float(par.detach())
    g_par = torch.autograd.grad(par, model.net.x_init)[0]
    g_it = torch.autograd.grad(it, model.net.x_init)[0]
    assert torch.allclose(g_par, g_it, atol=1e-4, rtol=1e-3)


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = AUSMConfig.preset("tiny", image_size=(64, 64), n_id=8, n_det=8)
    model = AUSM(cfg).train()
    batch = small_batch(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss, _ = clip_loss(
            model.forward_parallel(batch.frames, batch.history_masks, batch.history_active),
            batch,
            cfg,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    base = TrainConfig(
        model=SMALL,
        data={"kind": "synthetic", "min_radius": 5, "max_radius": 12},
        clip_frames=4,
        iterations=4,
        checkpoint_every=2,
        warmup=2,
    )
    straight = train(dataclasses.replace(base, out_dir=str(tmp_path / "a")), progress=False)
    half = dataclasses.replace(base, out_dir=str(tmp_path / "b"), stop_after=2)
    train(half, progress=False)
    resumed = train(dataclasses.replace(half, stop_after=None), resume=True, progress=False)
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    model = AUSM.from_weights(resumed)
    assert model.cfg.image_size == (64, 64)


def test_a_later_stage_starts_from_given_weights(tmp_path):
    first = TrainConfig(model=SMALL, clip_frames=2, iterations=1, out_dir=str(tmp_path / "a"))
    weights = train(first, progress=False)
    frozen = dataclasses.replace(
        first, out_dir=str(tmp_path / "b"), lr=0.0, init_weights=str(weights)
    )
    after = load_file(str(train(frozen, progress=False)))
    before = load_file(str(weights))
    assert all(torch.equal(before[k], after[k]) for k in before)
    other = dataclasses.replace(frozen, model={**SMALL, "d_model": 32})
    with pytest.raises(ValueError, match="another architecture"):
        train(other, progress=False)


def test_bad_train_configs(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"iterationz": 3})
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(mode="sideways")
    with pytest.raises(ValueError, match="no checkpoint"):
        train(TrainConfig(model=SMALL, out_dir=str(tmp_path / "x")), resume=True)
