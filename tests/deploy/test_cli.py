"""The command line reports models and turns project errors into a message and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ausm_stream.deploy.cli import main


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
