"""The control plane's processes never load the model: the API replica, the stream manager
and the coordinator's clients import no torch (hundreds of MB per process, and seconds at
start), only weights headers (:mod:`ausm_stream.model.versions`) and numpy prompts."""

from __future__ import annotations

import subprocess
import sys

CONTROL_PLANE = [
    "ausm_stream.deploy.api",
    "ausm_stream.deploy.metrics",
    "ausm_stream.operators.pool",
    "ausm_stream.operators.streams",
    "ausm_stream.operators.coordinator",
    "ausm_stream.model.versions",
    "ausm_stream.model.prompts",
]


def test_the_control_plane_imports_no_torch():
    script = (
        "import importlib, sys\n"
        f"for name in {CONTROL_PLANE!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout[:500]


def test_the_model_package_still_exports_its_names_on_use():
    from ausm_stream import model

    assert model.AUSM.__name__ == "AUSM" and callable(model.load_model)
    assert model.DEFAULT_WEIGHTS.name.endswith(".safetensors")
    try:
        model.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
