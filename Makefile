# The README's commands. Each target bootstraps .venv from nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/islet-imaging
OUT    ?= out

.PHONY: demo test bench lint system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.core-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $@ $(VENV)/.core-installed

system-deps:
	bash .ci/system-deps.sh

demo: $(VENV)/.core-installed
	$(CLI) run sample_data/dicom --implantation-csv sample_data/implantation.csv \
		--workspace $(OUT)/workspace --report $(OUT)

test: system-deps $(VENV)/.dev-installed
	$(PY) -m pytest

bench: $(VENV)/.dev-installed
	$(PY) benchmarks/run_all.py

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
