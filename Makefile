# `make run` and `make test` create .venv when it is missing and install into it.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

export DAGSTER_HOME ?= $(CURDIR)
export HEDGE_DATA_DIR ?= $(CURDIR)/data

.PHONY: install run test lint ui clean-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/hedge run

test: install
	$(BIN)/ruff check hedge_pipeline hedge_pipeline_tests
	$(BIN)/pytest -n 2 --dist loadgroup

lint: install
	$(BIN)/ruff check hedge_pipeline hedge_pipeline_tests
	$(BIN)/ruff format --check hedge_pipeline hedge_pipeline_tests

ui: install
	$(BIN)/hedge ui

clean-data:
	rm -rf data/warehouse.duckdb data/datasets data/mlflow data/dagster data/checkpoints data/reports
