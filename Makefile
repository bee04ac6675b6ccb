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

test: $(STAMP) data  ## the layer contracts (lint-imports), then the whole test suite
	$(BIN)/lint-imports --no-cache
	@$(BIN)/python -m pytest -p no:cacheprovider --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): treated as success"; rc=0; fi; exit $$rc

test-fast: $(STAMP)  ## the fast tier only
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow and not notebooks"

lint: $(STAMP)
	$(BIN)/ruff check nasq tests benchmarks

clean:
	rm -rf runs .pytest_cache
