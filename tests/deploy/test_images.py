"""The container files, checked without a container engine (none runs on these machines):
every file they copy exists, everything the package needs is copied, and they pin the torch
the project is tested with and the Ray version the chart tells KubeRay."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IMAGES = sorted((ROOT / "deploy" / "docker").glob("Dockerfile.*"))


@pytest.mark.parametrize("dockerfile", IMAGES, ids=[p.suffix[1:] for p in IMAGES])
def test_an_image_copies_the_whole_package_and_pins_torch(dockerfile):
    text = dockerfile.read_text()
    sources = {
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
        for src in line.split()[:-1]
    }
    assert sources, dockerfile
    for src in sources:
        assert (ROOT / src).exists(), f"{dockerfile.name} copies {src}, which does not exist"
    pyproject = (ROOT / "pyproject.toml").read_text()
    folders = set(re.findall(r'^"ausm_stream[.\w]*" = "(\w+)', pyproject, re.M)) | {"ausm_stream"}
    assert folders <= sources, f"{dockerfile.name} leaves out {sorted(folders - sources)}"
    pinned = re.search(r"install --quiet torch==([\d.]+)", (ROOT / "Makefile").read_text())
    assert f"ARG TORCH_VERSION={pinned.group(1)}" in text
    chart = yaml.safe_load((ROOT / "helm" / "ausm-stream" / "values.yaml").read_text())
    assert f"ARG RAY_VERSION={chart['rayVersion']}" in text  # KubeRay is told this version
