# `make run` and `make test` create .venv when it is missing and install into it.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

export DAGSTER_HOME ?= $(CURDIR)
export HEDGE_DATA_DIR ?= $(CURDIR)/data

# The registry `hedge` writes (hedge_pipeline/registry/versions.py: tracking_uri): the sqlite
# store under the data directory unless MLFLOW_TRACKING_URI names another.
MLFLOW_STORE := $(or $(MLFLOW_TRACKING_URI),sqlite:///$(HEDGE_DATA_DIR)/mlflow/mlflow.db)
MLFLOW_PORT  ?= 5000
# `make evaluate MODEL=hedge-ensemble:2`: another version than hedge evaluate's default.
MODEL ?=

.PHONY: install run test lint ui evaluate mlflow clean-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	# The peer of `hedge bench hedging --peer pfhedge`. Its metadata asks for numpy<2, which would
	# downgrade the project's numpy; it runs on numpy 2 (hedge_pipeline_tests/bench/test_hedging.py),
	# and its other needs (torch, tqdm) are installed already: no dependencies.
	$(BIN)/pip install --quiet --no-deps pfhedge==0.23.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/hedge run

test: install
	$(BIN)/ruff check hedge_pipeline hedge_pipeline_tests
	# The 25 slowest tests are printed: the CI log says where its time goes.
	$(BIN)/pytest -n 2 --dist loadgroup --durations=25

lint: install
	$(BIN)/ruff check hedge_pipeline hedge_pipeline_tests
	$(BIN)/ruff format --check hedge_pipeline hedge_pipeline_tests

ui: install
	$(BIN)/hedge ui

evaluate: install
	$(BIN)/hedge evaluate $(MODEL)

mlflow: install
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_STORE) --host 127.0.0.1 --port $(MLFLOW_PORT)

clean-data:
	rm -rf data/warehouse.duckdb data/datasets data/mlflow data/dagster data/checkpoints data/reports
