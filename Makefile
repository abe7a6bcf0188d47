# jupyter_kubeai — the two commands: `make run` and `make test`.
#
# Everything lands in the project: the Python environment in .venv/, the
# lab extension's node_modules/, configurable-http-proxy in proxy/. Only the
# browser for the browser tests comes from the system (Debian's chromium).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHP := proxy/node_modules/.bin/configurable-http-proxy
LABEXT := jupyter_kubeai/labextension/package.json
LAB_SOURCES := package.json yarn.lock tsconfig.json .yarnrc.yml $(wildcard src/*.ts src/*.tsx style/*)
PYTEST_ARGS ?=
# Tools that call each other (jlpm inside package.json scripts, jupyter-builder
# from `jupyter labextension`) find the project's environment first.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help run test setup setup-test browser postgres lab bench lint clean

help:
	@echo "make run    set up .venv/ and start the hub in local mode at http://127.0.0.1:8000"
	@echo "make test   set up everything the tests need and run them all (Python and browser)"
	@echo "make lab    rebuild the lab extension after changing src/ or style/"
	@echo "make bench  run the benchmarks in bench/"
	@echo "make lint   check the Python code with ruff"

run: setup
	@$(BIN)/python -m jupyter_kubeai.local login-help
	$(BIN)/jupyterhub -f jupyterhub_config.py

test: setup-test browser postgres
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup-test
	$(BIN)/python bench/run.py

lint: setup
	$(BIN)/ruff check jupyter_kubeai tests bench

setup: $(VENV)/.installed $(CHP) $(LABEXT)

setup-test: setup $(VENV)/.installed-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip

# The editable install builds the lab extension (hatch-jupyter-builder) when
# it is missing and copies it into the environment.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev,test,torch]"
	touch $@

# After a change in src/ or style/: rebuild, and link the built folder into
# the environment (instead of the install's copy) so a page reload shows it.
$(LABEXT): $(LAB_SOURCES) | $(VENV)/.installed
	$(BIN)/jlpm install
	$(BIN)/jlpm build:prod
	$(BIN)/jupyter labextension develop --overwrite .
	touch $@

lab: $(LABEXT)

$(CHP): proxy/package.json proxy/package-lock.json
	npm ci --prefix proxy --no-audit --no-fund
	touch $@

# Debian's chromium for the browser tests (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Debian's PostgreSQL server binaries: the store tests start a throwaway server
# of their own on loopback (tests/postgres.py); the system cluster is not used.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

clean:
	rm -rf $(VENV) node_modules lib tsconfig.tsbuildinfo jupyter_kubeai/labextension jupyter_kubeai/_version.py proxy/node_modules test-artifacts
