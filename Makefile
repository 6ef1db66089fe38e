# fastpaca — developer entry points.
#   make run    install into .venv and start one node on embedded defaults
#   make test   install what the tests need and run them all
#   make lint   ruff + mypy
#   make bench  benchmarks (print throughput / latency / memory figures)
#   make soak   long simulation and fault runs
#   make package  build the one-file binary dist/fastpaca and smoke-test it

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# How many simulator seeds `make test` runs; `make soak` runs many more.
SIM_SEEDS ?= 200
SOAK_SIM_SEEDS ?= 5000

.PHONY: run test lint bench soak install clean system-deps bench-deps js-deps package

# Programs the tests run outside Python, from Debian's packages: a DNS server
# for discovery tests, redis-server and PostgreSQL for the pub/sub and archive
# tests. Installed only when missing; tests start their own throwaway
# instances on free loopback ports and never use the machine's services.
# PostgreSQL's server binaries (initdb, postgres) live off PATH under
# /usr/lib/postgresql/<version>/bin, so its entry checks pg_ctlcluster, which
# the same package set installs on PATH.
SYSTEM_DEPS := dnsmasq:dnsmasq-base redis-server:redis-server systemd-analyze:systemd \
               pg_ctlcluster:postgresql
# Node and npm run the official Phoenix JS client against a node (tests/stream).
JS_DEPS     := node:nodejs npm:npm
JS_DIR      := tests/stream/js
JS_STAMP    := $(JS_DIR)/node_modules/.installed-$(shell cat $(JS_DIR)/package-lock.json | cksum | cut -d' ' -f1)
BENCH_DEPS  := wrk:wrk redis-server:redis-server

# $(call apt_ensure,bin:package ...): apt-get install the packages whose binary is missing.
define apt_ensure
	@missing=""; for pair in $(1); do \
	  bin=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$bin >/dev/null 2>&1 || [ -x /usr/sbin/$$bin ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

system-deps:
	$(call apt_ensure,$(SYSTEM_DEPS))

bench-deps:
	$(call apt_ensure,$(BENCH_DEPS))

# The pinned phoenix and ws packages (package-lock.json), reinstalled when the lock changes.
$(JS_STAMP): $(JS_DIR)/package-lock.json
	$(call apt_ensure,$(JS_DEPS))
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

js-deps: $(JS_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[test,bench]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

run: install
	FASTPACA_RAFT_DATA_DIR=$${FASTPACA_RAFT_DATA_DIR:-priv/raft} $(VENV)/bin/fastpaca serve

test: install system-deps js-deps
	$(PY) -m pytest -q -p no:cacheprovider --sim-seeds=$(SIM_SEEDS) tests

lint: install
	$(VENV)/bin/ruff check fastpaca tests bench
	$(VENV)/bin/ruff format --check fastpaca tests bench
	$(VENV)/bin/mypy

bench: install bench-deps
	$(PY) bench/raft_bench.py
	$(PY) bench/http_bench.py
	$(PY) bench/cluster_bench.py

# Thousands of simulator seeds (fresh ones: they start past the seeds `make
# test` runs), then 100 kill -9/restart cycles of a 3-node cluster under load.
soak: install system-deps
	FASTPACA_SIM_SEED_BASE=100000 $(PY) -m pytest -q -p no:cacheprovider --sim-seeds=$(SOAK_SIM_SEEDS) tests/sim
	$(PY) bench/cluster_soak.py --cycles 100

# The one-file binary (PyInstaller) and its smoke test: the binary, started
# from an empty dir with no Python around it, serves the API, the stream, the
# Redis adapter, the archive's failure path and a 3-node cluster. Not part of
# `make test`: it builds for about a minute. The smoke test needs redis-server.
package: | $(VENV)/bin/python
	$(call apt_ensure,redis-server:redis-server)
	VENV=$(VENV) bash packaging/build.sh
	$(PY) packaging/smoke.py dist/fastpaca

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache $(JS_DIR)/node_modules
