# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
FASHION_DIR := /usr/share/datasets/fashion-mnist
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled

.PHONY: demo test test-fast data chromium install lint clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the pinned CPU wheel lies on disk; anything else downloads a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[all,dev]"
	$(BIN)/pip install -q --no-deps aeon==1.3.0
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install nasq with pinned versions

data:  ## install Fashion-MNIST from Debian where apt-get is available
	@if [ -d $(FASHION_DIR) ]; then echo "Fashion-MNIST: $(FASHION_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo "sudo -n" ); \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  ($$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
	  echo "could not install dataset-fashion-mnist: nasq will fall back to scikit-learn digits"; \
	else echo "no apt-get: nasq will fall back to scikit-learn digits"; fi

chromium:  ## install headless Chromium (the MLflow UI browser test) where apt-get is available
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo "sudo -n" ); \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	  ($$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q chromium >/dev/null 2>&1) || \
	  echo "could not install chromium: the browser test will be skipped (and fail under CI=true)"; \
	else echo "no apt-get: the browser test will be skipped (and fail under CI=true)"; fi

demo: $(STAMP) data  ## install everything and run the whole pipeline on the demo experiment
	$(BIN)/nasq run examples/demo.yaml

# pytest-xdist, one worker per core, each file on one worker (its module fixtures start once). Two
# passes: the unit tiers, then the integration tests (real Ray clusters, MLflow servers, jobs), each
# with TEST_JOBS workers. Mixing the two in one pass once crashed a worker, and xdist then hung
# waiting for it (so a crashed worker now fails the pass at once: --max-worker-restart 0); either
# pass alone has run clean. TEST_JOBS=0 runs each pass in one process.
TEST_JOBS ?= 2
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider --durations=10 $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadfile --max-worker-restart 0)

test: $(STAMP) data  ## the layer contracts (lint-imports), then the whole test suite (two passes)
	$(BIN)/lint-imports --no-cache
	@for pass in "--ignore=tests/integration tests" "tests/integration"; do \
	  echo "pytest $$pass"; $(PYTEST) $$pass; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): treated as success"; rc=0; fi; \
	  [ $$rc -eq 0 ] || exit $$rc; \
	done

test-fast: $(STAMP)  ## the fast tier only
	$(PYTEST) -m "not slow and not notebooks" tests

lint: $(STAMP)
	$(BIN)/ruff check nasq tests benchmarks

clean:
	rm -rf runs .pytest_cache
