# PixyProxy: `make run` serves the embedded default; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format typecheck unit integration bench clean lock lockcheck hadolint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The locked tree (dev extra included, every file hash-checked), then PixyProxy itself on top of it.
$(STAMP): pyproject.toml requirements-dev.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/pixyproxy serve

lint: $(STAMP)
	$(BIN)/ruff check pixyproxy tests bench
	$(BIN)/ruff format --check pixyproxy tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format pixyproxy tests bench
	$(BIN)/ruff check --fix pixyproxy tests bench

test: lockcheck lint hadolint typecheck
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run

# Re-resolve pyproject.toml into uv.lock (keeping current pins where they still fit; UPGRADE=1 moves
# every pin to the newest allowed) and export the two hash-pinned requirement files pip installs.
lock: | $(BIN)/python
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet 'uv>=0.5'
	$(BIN)/uv lock --python $(BIN)/python $(if $(UPGRADE),--upgrade)
	$(BIN)/uv export --quiet --frozen --no-emit-project --no-header -o requirements.lock
	$(BIN)/uv export --quiet --frozen --no-emit-project --no-header --extra dev -o requirements-dev.lock
	$(PYTHON) tools/lockcheck.py stamp

# Offline and instant: the locks must carry the hash of pyproject.toml's dependency lists.
lockcheck:
	$(PYTHON) tools/lockcheck.py check

hadolint: $(STAMP)
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
