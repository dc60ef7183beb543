"""The command line reports models and turns project errors into a message and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ausm_stream.deploy.cli import main
from ausm_stream.deploy.runtime import local_cpus
from ausm_stream.errors import ConfigError
from ausm_stream.pipeline.config import PipelineConfig


def test_info_describes_the_tiny_preset(capsys):
    assert main(["info", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "state per stream:" in out and "128x128" in out


def test_missing_weights_is_a_clear_error(capsys, tmp_path):
    assert main(["info", "--weights", str(tmp_path / "nope.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("ausm-stream")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ausm-stream ")


def test_eval_prints_the_metric_table_with_runtime_overrides(capsys):
    weights = Path(__file__).parents[2] / "model" / "weights" / "shapes-tiny.safetensors"
    args = ["eval", "--weights", str(weights), "--data", "synthetic:test:2:4"]
    assert main([*args, "--set", "fg_threshold=0.6", "--set", "max_missing=3"]) == 0
    out = capsys.readouterr().out
    assert "J&F" in out and "AP50" in out


def test_eval_overrides_are_checked(capsys):
    weights = Path(__file__).parents[2] / "model" / "weights" / "shapes-tiny.safetensors"
    args = ["eval", "--weights", str(weights), "--data", "synthetic:test:1:2", "--set"]
    assert main([*args, "d_model=32"]) == 2
    assert "KEY one of" in capsys.readouterr().err
    assert main([*args, "max_missing=soon"]) == 2
    assert "max_missing must be of type int" in capsys.readouterr().err
    assert main([*args, "fg_threshold=1.5"]) == 2
    assert "fg_threshold" in capsys.readouterr().err
    assert main([*args, "test_time_repetition=maybe"]) == 2  # not bool("maybe") == True
    assert "test_time_repetition must be of type bool" in capsys.readouterr().err
    assert main([*args, "test_time_repetition=false"]) == 0


def test_calibrate_stores_runtime_defaults_and_keeps_the_rest(capsys, tmp_path):
    from ausm_stream.model import AUSM, AUSMConfig

    src, out = tmp_path / "w.safetensors", tmp_path / "tuned.safetensors"
    AUSM(AUSMConfig.preset("tiny", image_size=(64, 64))).save_weights(src, {"note": "kept"})
    args = ["calibrate", "--weights", str(src), "--out", str(out)]
    assert main([*args, "--set", "fg_threshold=0.9", "--set", "track_threshold=0.4"]) == 0
    assert "fg_threshold=0.9, track_threshold=0.4" in capsys.readouterr().out
    cfg = AUSM.read_config(out)
    assert (cfg.fg_threshold, cfg.track_threshold) == (0.9, 0.4)
    assert AUSM.read_metadata(out)["note"] == "kept"
    assert AUSM.read_config(src).fg_threshold == 0.5  # the source is untouched
    assert AUSM.from_weights(out, fg_threshold=0.6).cfg.fg_threshold == 0.6  # still overridable
    assert main(["calibrate", "--weights", str(out), "--set", "max_missing=3"]) == 0  # in place
    assert (AUSM.read_config(out).max_missing, AUSM.read_config(out).fg_threshold) == (3, 0.9)
    tuned, original = AUSM.from_weights(out).state_dict(), AUSM.from_weights(src).state_dict()
    assert all(torch.equal(tuned[k], original[k]) for k in original)  # weights untouched
    assert main(args) == 2 and "at least one --set" in capsys.readouterr().err
    assert main([*args, "--set", "n_det=3"]) == 2  # architecture is fixed by the weights
    # The input size a recipe trained at is not the one it serves at: weights are the same.
    assert main([*args, "--image-size", "96x160"]) == 0
    assert AUSM.read_config(out).image_size == (96, 160)
    resized = AUSM.from_weights(out).state_dict()
    assert all(torch.equal(resized[k], original[k]) for k in original)
    with pytest.raises(SystemExit):
        main([*args, "--image-size", "96by160"])


def test_a_worker_that_cannot_fit_in_local_ray_is_a_config_error():
    cfg = PipelineConfig.from_dict({"ray": {"num_cpus": 1}, "worker": {"cpus": 2}})
    with pytest.raises(ConfigError, match=r"worker\.cpus=2, worker\.count=0"):
        local_cpus(cfg)
    assert local_cpus(PipelineConfig.from_dict({"worker": {"cpus": 64}})) == 64
    three = PipelineConfig.from_dict({"worker": {"count": 3}})
    assert local_cpus(three) == max(os.cpu_count() or 1, 3)  # room for every worker


@pytest.mark.parametrize(
    "argv",
    [
        [
            "export",
            "--format",
            "mot",
            "--out",
            "{tmp}/out",
            "--store",
            "{tmp}/s",
            "--stream",
            "../x",
        ],
        ["render", "--stream", "a/b", "--video", "v.mp4", "--out", "o.mp4", "--store", "{tmp}/s"],
        ["ingest", "--stream-id", "../../x", "--source", "a.mp4"],
        ["streams", "add", "ok\n", "external"],
        ["streams", "show", "x%2Fy"],
        ["streams", "rm", ""],
        ["streams", "prompt", "../registry/streams/evil", "--box", "1,2,3,4"],
    ],
)
def test_hostile_stream_ids_are_usage_errors_before_anything_is_opened(argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        main([a.format(tmp=tmp_path) for a in argv])
    assert stopped.value.code == 2 and "stream id" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no store opened, no folder made


def test_a_hostile_source_id_is_a_config_error():
    from ausm_stream.deploy.run import parse_sources

    with pytest.raises(ConfigError, match=r"--source '\.\./x=a\.mp4': stream id '\.\./x'"):
        parse_sources(["../x=a.mp4"])
    assert parse_sources(["cam-7=a.mp4"]) == {"cam-7": "a.mp4"}
