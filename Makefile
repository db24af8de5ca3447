# closedloop-nb: `make report` runs the main job on the sample data; `make test` runs the checks.
# Both create .venv and install the project into it first (nothing else needs installing by hand).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: report test lint lab sample-data bench clean help

help:
	@echo "make report       set up, then run the report notebooks on the sample data (reports/index.html)"
	@echo "make test         set up, then run ruff and pytest"
	@echo "make lab          set up, register the closedloop-nb kernel, open JupyterLab on notebooks/"
	@echo "make sample-data  regenerate data/sample/ deterministically"
	@echo "make bench        run the benchmarks in benchmarks/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

report: $(STAMP)
	$(BIN)/closedloop report parameters/*.yaml --jobs 2
	@echo
	@echo "Reports: $(CURDIR)/reports/index.html"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The project's kernel is registered in the venv's own prefix (nothing written to ~/.local), then
# JupyterLab starts on the notebooks; run cl.explore(...) in a notebook for the explorer. Extra options
# go in LAB_ARGS (`make lab LAB_ARGS="--no-browser --port=8899"`); as root (containers) JupyterLab
# refuses to start without --allow-root, so it is added there.
LAB_ARGS ?=
lab: $(STAMP)
	$(BIN)/python -m ipykernel install --prefix $(CURDIR)/$(VENV) --name closedloop-nb \
		--display-name "Python (closedloop-nb)"
	$(BIN)/jupyter lab --ServerApp.root_dir=$(CURDIR)/notebooks $(if $(filter 0,$(shell id -u)),--allow-root) \
		$(LAB_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

sample-data: $(STAMP)
	rm -rf data/sample
	$(BIN)/closedloop synth --visitors 40000 --seed 20240101 --out data/sample

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_synth.py

clean:
	rm -rf $(VENV) reports .pytest_cache .ruff_cache
