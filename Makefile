# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv/ first (idempotent).
SHELL := /bin/bash
VENV := .venv/bin
OUT ?= out/demo
export HF_HUB_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0
# The suite runs on two pytest-xdist workers (both cores of the development machine); the curation tests,
# which start local Ray clusters, stay on one worker (tests/conftest.py). TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --durations=15

.PHONY: setup demo test test-fast test-multinode bench lint clean

setup:
	scripts/setup.sh

demo: setup
	scripts/demo.sh $(OUT)

test: setup
	$(VENV)/python -m pytest -q $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/python -m pytest -q -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-multinode: setup  # just the multi-node tests (also in `make test`): a head and three worker nodes, a build on S3
	$(VENV)/python -m pytest -q -m multinode tests/curate

bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(VENV)/python $$b || exit 1; done

clean:
	rm -rf out .pytest_cache
