# closedloop-nb: `make report` runs the main job on the sample data; `make test` runs the checks.
# Both create .venv and install the project into it first (nothing else needs installing by hand).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: report test lint sample-data bench clean help

help:
	@echo "make report       set up, then run the report notebooks on the sample data (reports/index.html)"
	@echo "make test         set up, then run ruff and pytest"
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

lint: $(STAMP)
	$(BIN)/ruff check .

sample-data: $(STAMP)
	rm -rf data/sample
	$(BIN)/closedloop synth --visitors 40000 --seed 20240101 --out data/sample

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_synth.py

clean:
	rm -rf $(VENV) reports .pytest_cache .ruff_cache
