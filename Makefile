# Entry points for developers and CI. Every target that runs code first runs
# scripts/setup.sh, which is idempotent and silent when nothing needs installing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python

PYTEST_ARGS ?=
UP_ARGS ?=
BENCH_ARGS ?=

.PHONY: help setup up test lint bench clean distclean

help:
	@echo "make up      set up, then start the whole system (nats-server, catalog, services, web UI)"
	@echo "make test    set up, then lint (ruff), type-check (mypy) and run the tests (PYTEST_ARGS='-k name')"
	@echo "make lint    ruff check and mypy only"
	@echo "make bench   TimeVault vs restic benchmark (BENCH_ARGS='--size-mb 100')"
	@echo "make setup   install system packages and the .venv (idempotent)"
	@echo "make clean   remove caches and test/bench output; distclean also removes .venv"

setup:
	@bash scripts/setup.sh

up: setup
	$(VENV)/bin/timevault up $(UP_ARGS)

# Each step's exit code stops the recipe: lint and types first, they take seconds.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/bench_core.py $(BENCH_ARGS)

clean:
	rm -rf test-output bench-output .pytest_cache .ruff_cache .mypy_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
