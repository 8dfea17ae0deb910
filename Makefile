# Set-up in one command on a fresh machine (README "Set-up"):
#   make demo   creates .venv on first use, installs what is missing, trains demo.yaml on the CPU
#   make test   the same set-up, then the whole test suite
# The install step re-runs only when setup.py changed since the last one (the .venv/.installed stamp).
# Variables: PYTHON (the interpreter that makes the venv), TORCH (the torch requirement), EXTRAS.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= test,spconv
PY := $(VENV)/bin/python

.PHONY: install demo test gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install "$(TORCH)" ".[$(EXTRAS)]"
	touch $@

demo: install
	$(PY) main.py --config demo.yaml

test: install
	$(PY) -m pytest -q tests

# On a GPU machine with torch+CUDA already installed (no venv): CUDA tests, benchmarks, an AMP run.
gpu-check:
	python scripts/gpu_check.py --out gpu_check.json
