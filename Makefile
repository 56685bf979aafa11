# The README's two commands: `make run` (install + the whole pipeline + a live endpoint) and
# `make test` (install + the test suite). `.ci/run` calls `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of PyTorch (it lies on the dev/CI machines' disk). GPU users: see README "GPU".
TORCH  ?= torch==2.13.0

export HF_HUB_OFFLINE ?= 1
export GX_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install browser postgres run serve stop dashboard schedule lint test test-unit test-slow test-fast bench clean

install: $(BIN)/.installed
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-cache-dir "$(TORCH)" -e ".[dev]"
	touch $@

run: install
	$(BIN)/bertops run
	-$(BIN)/dvc push -q
	$(BIN)/bertops serve --detach

serve: install
	$(BIN)/bertops serve --detach

stop:
	$(BIN)/bertops serve --stop

# Headless Chromium for the dashboard test (Debian's package, driven by Playwright).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

# PostgreSQL binaries for the registry tests against a real server (Debian's package; the tests
# start their own server on 127.0.0.1 in a temporary folder and stop it).
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; }

dashboard: install
	$(BIN)/bertops dashboard --detach

schedule: install
	$(BIN)/bertops schedule

# Checks that keep the house in order: lint + format (ruff, one line length), types (mypy on
# bertops/). Import contracts and DVC dependencies are unit tests (tests/unit/test_import_contracts.py,
# tests/unit/test_dvc_deps.py).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The README's test command: fast tiers first, each stopping the run when it fails, so a lint or
# unit failure is reported in a minute, before the slow tiers start.
test: install browser postgres
	@echo "== tier 1/3: lint" && start=$$(date +%s) && $(MAKE) --no-print-directory lint && echo "lint: $$(( $$(date +%s) - start )) s"
	@echo "== tier 2/3: unit" && $(MAKE) --no-print-directory test-unit
	@echo "== tier 3/3: integration + e2e" && $(MAKE) --no-print-directory test-slow

test-unit: install postgres
	$(BIN)/python -m pytest tests/unit

test-slow: install browser postgres
	$(BIN)/python -m pytest --durations=15 tests/integration tests/e2e

test-fast: test-unit

bench: install
	$(BIN)/python bench/finetune_throughput.py
	$(BIN)/python bench/pretrain_throughput.py
	$(BIN)/python bench/endpoint.py   # needs a production model: `make run` first
	$(BIN)/python bench/promotion.py  # builds its own two-version workspace in /tmp
	$(BIN)/python bench/experiment_overhead.py  # recorded vs unrecorded smoke runs, its own git + DVC workspace

clean:
	rm -rf data/raw data/prepared models reports registry serving/bertops_serving.json
