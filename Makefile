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

.PHONY: install browser run serve stop dashboard schedule test test-fast bench clean

install: $(BIN)/.installed
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" -e ".[dev]"
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

dashboard: install
	$(BIN)/bertops dashboard --detach

schedule: install
	$(BIN)/bertops schedule

test: install browser
	$(BIN)/python -m pytest tests

test-fast: install
	$(BIN)/python -m pytest tests/unit

bench: install
	$(BIN)/python bench/finetune_throughput.py
	$(BIN)/python bench/pretrain_throughput.py
	$(BIN)/python bench/endpoint.py   # needs a production model: `make run` first

clean:
	rm -rf data/raw data/prepared models reports registry serving/bertops_serving.json
