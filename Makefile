VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/longtail demo

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow and not distributed"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
