# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv/ first (idempotent).
SHELL := /bin/bash
VENV := .venv/bin
OUT ?= out/demo
export HF_HUB_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup demo test test-fast bench lint clean

setup:
	scripts/setup.sh

demo: setup
	scripts/demo.sh $(OUT)

test: setup
	$(VENV)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(VENV)/python $$b || exit 1; done

clean:
	rm -rf out .pytest_cache
