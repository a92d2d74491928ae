# The whole set-up on a fresh machine is `make train` or `make test`: each creates or refreshes the
# virtual environment when it is missing or pyproject.toml changed, installs psr editable, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=


.PHONY: train test lint typecheck clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'sweeps==0.3.0'
	@touch $(STAMP)

## Train the default model (RCAN, x4, Poisson degradation) on the embedded phantom data.
train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

## Run the test suite (CPU, tiny images and models).
test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy psr

clean-venv:
	rm -rf $(VENV)
