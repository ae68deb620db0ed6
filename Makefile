VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast bench-quick clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/longtail demo

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow and not distributed"

# The benchmark's newcomer subset: 4 runs at imbalance 100, one seed, 20 epochs (about 4 minutes on 2 cores).
bench-quick: setup
	$(PY) benchmarks/accuracy/run.py --grid quick --imbalances 100 --seeds 0 --out $(or $(OUT),runs/bench-quick)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
