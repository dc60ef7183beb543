"""Training: parallel and iterative agree, losses fall, a resumed run continues exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ausm_stream.model import AUSM, AUSMConfig
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.model.training.loop import TrainConfig, forward_iterative, train
from ausm_stream.model.training.objective import clip_loss, upsampled_mask_logits
from ausm_stream.model.training.self_history import own_histories
from ausm_stream.model.training.teacher import MAX_MORPH, MAX_SHIFT, make_batch, perturb_mask

SMALL = {"preset": "tiny", "image_size": [64, 64], "n_id": 8, "n_det": 8}


def small_videos(cfg: AUSMConfig, frames: int = 5):
    spec = ShapesSpec(size=cfg.image_size, frames=frames, min_radius=5, max_radius=12)
    return [generate_video("train", i, spec) for i in range(2)]


def small_batch(cfg: AUSMConfig, frames: int = 5, history_noise: float = 0.0):
    return make_batch(small_videos(cfg, frames), cfg, np.random.default_rng(0), history_noise)


def test_teacher_forcing_targets_follow_switch_times():
    cfg = AUSMConfig.preset("tiny", image_size=(64, 64), n_id=8, n_det=8)
    videos = small_videos(cfg, frames=6)
    batch = make_batch(videos, cfg, np.random.default_rng(0))
    for b, per_frame in enumerate(batch.targets):
        for t, tgt in enumerate(per_frame):
            active = set(batch.history_active[b, t].nonzero().flatten().tolist())
            assert set(tgt.track) == active  # tracked slots are exactly the history's slots
            if t == 0:
                assert not active  # nothing can be in the history before the first frame
            for slot in active:  # history holds an instance's ground truth of the frame before
                previous = torch.from_numpy(videos[b].masks[t - 1])
                assert (previous == batch.history_masks[b, t, slot]).all(dim=(1, 2)).any()


def test_history_noise_degrades_history_masks_like_predictions():
    cfg = AUSMConfig.preset("tiny", image_size=(64, 64), n_id=8, n_det=8)
    clean = small_batch(cfg, frames=8)
    noisy = small_batch(cfg, frames=8, history_noise=1.0)
    assert torch.equal(clean.history_active, noisy.history_active)  # same tracks, same times
    active = clean.history_active
    assert active.any()
    changed = (clean.history_masks != noisy.history_masks).any(dim=(-2, -1))
    assert changed[active].float().mean() > 0.5
    near = torch.nn.functional.max_pool2d(  # every degraded pixel lies near the true mask
        clean.history_masks[active].float().unsqueeze(1),
        kernel_size=2 * (MAX_SHIFT + MAX_MORPH) + 1,
        stride=1,
        padding=MAX_SHIFT + MAX_MORPH,
    ).squeeze(1)
    assert not (noisy.history_masks[active] & (near == 0)).any()


def test_history_drop_loses_a_tracked_history_and_makes_it_a_detection_target():
    cfg = AUSMConfig.preset("tiny", image_size=(64, 64), n_id=8, n_det=8)
    videos = small_videos(cfg, frames=12)
    clean = make_batch(videos, cfg, np.random.default_rng(0))
    drop = make_batch(videos, cfg, np.random.default_rng(0), history_drop=1.0)
    assert torch.equal(clean.history_active, drop.history_active)  # same tracks, same times
    lost = clean.history_active & ~drop.history_masks.any(dim=(-2, -1))
    lost &= clean.history_masks.any(dim=(-2, -1))  # histories emptied by the drop
    assert lost.any()
    assert torch.equal(drop.history_masks[~lost], clean.history_masks[~lost])  # nothing else
    extras = 0
    for b, per_frame in enumerate(drop.targets):
        for t, tgt in enumerate(per_frame):
            extra = len(tgt.det_classes) - len(clean.targets[b][t].det_classes)
            # a lost instance visible at t is a detection target too; its slot still tracks it
            assert 0 <= extra <= int(lost[b, t].sum()), (b, t)
            assert tgt.track.keys() == clean.targets[b][t].track.keys()
            extras += extra
    assert extras > 0


def test_own_histories_are_the_models_rollout_after_enough_rounds():
    torch.manual_seed(0)
    cfg = AUSMConfig.preset("tiny", image_size=(64, 64), n_id=8, n_det=8)
    model = AUSM(cfg).eval()
    with torch.no_grad():  # an untrained model sees little: lower the bar so masks feed back
        model.net.pixel_decoder.class_head.bias[-1] = -4.0
    teacher = small_batch(cfg, frames=6)
    t_len = teacher.frames.shape[1]
    full = own_histories(model, teacher, rounds=t_len - 1)
    assert torch.equal(full.history_active, teacher.history_active)
    active = teacher.history_active
    first = active.clone()
    first[:, 1:] &= ~active[:, :-1]  # the first tracked frame keeps its teacher mask
    assert torch.equal(full.history_masks[first], teacher.history_masks[first])
    assert not full.history_masks[~active].any()  # untracked slots stay empty
    carried = active & ~first
    assert carried.any()
    assert (full.history_masks[carried] != teacher.history_masks[carried]).any()
    # A fixed point: each frame's history is the model's own mask of the frame before, given
    # its own history there, which is what running the stream frame by frame feeds it.
    again = own_histories(model, full, rounds=1)
    assert torch.equal(again.history_masks, full.history_masks)
    shallow = own_histories(model, teacher, rounds=1)
    assert not torch.equal(shallow.history_masks, full.history_masks)


def test_perturbed_masks_are_shifted_and_resized():
    mask = np.zeros((40, 40), dtype=bool)
    mask[12:28, 10:30] = True
    outs = [perturb_mask(mask, np.random.default_rng(seed)) for seed in range(64)]
    areas = [int(o.sum()) for o in outs]
    assert max(areas) > mask.sum() and 0 < min(areas) < mask.sum()
    assert len({o.tobytes() for o in outs}) > 32  # varied, and reproducible per seed:
    assert np.array_equal(outs[5], perturb_mask(mask, np.random.default_rng(5)))


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


def test_finer_mask_targets_are_the_pooled_ground_truth():
    cfg = AUSMConfig.preset("tiny", image_size=(64, 64), n_id=8, n_det=8)
    videos = small_videos(cfg, frames=4)
    batch = make_batch(videos, cfg, np.random.default_rng(0), mask_stride=2)
    checked = 0
    for b, per_frame in enumerate(batch.targets):
        for t, tgt in enumerate(per_frame):
            pooled = F.avg_pool2d(torch.from_numpy(videos[b].masks[t]).float()[:, None], 2)[:, 0]
            for target in [*tgt.det_masks, *(m for _, m in tgt.track.values() if m is not None)]:
                assert target.shape == (32, 32)
                assert (pooled == target).all(dim=(1, 2)).any()
                checked += 1
    assert checked > 0
    with pytest.raises(ValueError, match="mask_stride"):
        make_batch(videos, cfg, np.random.default_rng(0), mask_stride=3)


def test_the_finer_mask_loss_sees_what_inference_thresholds():
    """Logits upsampled to 1/2 are exactly the 2x2 means of those upsampled to full size."""
    cfg = AUSMConfig.preset("tiny", image_size=(64, 64), n_id=8, n_det=8)
    batch = make_batch(small_videos(cfg, frames=2), cfg, np.random.default_rng(0), mask_stride=2)
    logits = torch.randn(2, 2, 3, 16, 16)
    full = F.interpolate(logits.flatten(0, 1), size=(64, 64), mode="bilinear").unflatten(0, (2, 2))
    expected = F.avg_pool2d(full.flatten(0, 1), 2).unflatten(0, (2, 2))
    torch.testing.assert_close(upsampled_mask_logits(logits, batch), expected)


@pytest.mark.parametrize("mask_stride", [4, 2])
def test_loss_falls_on_a_fixed_batch(mask_stride):
    torch.manual_seed(0)
    cfg = AUSMConfig.preset("tiny", image_size=(64, 64), n_id=8, n_det=8)
    model = AUSM(cfg).train()
    batch = make_batch(small_videos(cfg), cfg, np.random.default_rng(0), mask_stride=mask_stride)
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
    with pytest.raises(ValueError, match="mask_stride"):
        TrainConfig(mask_stride=8)
    with pytest.raises(ValueError, match="no checkpoint"):
        train(TrainConfig(model=SMALL, out_dir=str(tmp_path / "x")), resume=True)
    with pytest.raises(ValueError, match="history_drop"):
        TrainConfig(history_drop=1.5)


def test_training_on_cuda_without_a_gpu_says_so(tmp_path, capsys):
    """``ausm-stream train --device cuda`` where torch sees no GPU: the error names the
    device and exits before any work (the GPU run itself is for a machine with one)."""
    from ausm_stream.deploy.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error case cannot happen here")
    config = tmp_path / "train.yaml"
    config.write_text(f"model: {SMALL}\nclip_frames: 2\niterations: 1\nout_dir: {tmp_path}/r\n")
    assert main(["train", "--config", str(config), "--device", "cuda"]) != 0
    assert "cuda" in capsys.readouterr().err.lower()
    assert not (tmp_path / "r").exists()
