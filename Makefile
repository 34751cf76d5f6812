# multiarch-builder: `make demo` for a first build on one machine, `make test` for the suite.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STATE := .local
PORT ?= 5000
DB ?= sqlite
REGISTRY := 127.0.0.1:$(PORT)
PYTHON ?= python3

.PHONY: help deps venv up down builder demo test lint format clean serve stop bench reliability gc cluster cluster-down

help:
	@echo "make demo   - install what is missing, start a local registry, build examples/hello for amd64+arm64, signed, with SBOM and provenance, then verify it"
	@echo "make test   - lint and run every test (unit + integration)"
	@echo "make up     - local registry, QEMU emulation and the offline base image only"
	@echo "make down   - stop the local registry"
	@echo "make builder - make up, then the Debian 12 base and the builder image for amd64+arm64 -> $(REGISTRY)/multiarch/builder"
	@echo "make serve  - make up, then a Prefect server + UI on 127.0.0.1:4200, work pools, a worker, the deployments"
	@echo "             DB=postgres: the server on PostgreSQL, a cluster of its own under $(STATE)/postgres"
	@echo "make stop   - stop the Prefect server, worker and PostgreSQL of make serve (the registry keeps running)"
	@echo "make bench  - benchmarks B1-B6 -> bench/results/latest.{json,md,png} (BENCH_QUICK=1: tiny run)"
	@echo "make reliability - run the fault suite (tests/faults) and regenerate docs/reliability.md"
	@echo "make cluster - a real Kubernetes control plane (built from Go modules) + amd64/arm64 node agents"
	@echo "make cluster-down - stop it and remove $(STATE)/cluster (the built binary stays cached)"
	@echo "make gc     - remove what killed runs left under $(STATE)/work (multiarch gc)"
	@echo "make clean  - stop and delete $(STATE)/ and $(VENV)/"

deps:
	@scripts/install-deps

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

up: deps venv
	$(BIN)/python -m devtools up --state-dir $(STATE) --port $(PORT)

# The Debian 12 base (mmdebstrap, tars cached under $(STATE)/debian-base/) and the builder image
# (deployments/builder/Containerfile) built by this project's flow: $(REGISTRY)/multiarch/builder.
builder: up
	$(BIN)/python -m devtools builder --state-dir $(STATE) --port $(PORT)

# The demo signs with a key of its own (made once, kept under $(STATE)/signing), attaches an
# SBOM and provenance per platform, then checks all of it as a consumer would.
SIGNING := $(STATE)/signing
# `make demo TOOLCHAIN=debian13`: build with Debian 13's buildah 1.39 (multiarch/toolchain.py)
TOOLCHAIN ?= host

demo: up $(SIGNING)/signing.key
	$(BIN)/multiarch build \
		--image $(REGISTRY)/examples/hello:latest \
		--platform linux/amd64 --platform linux/arm64 \
		--context examples/hello \
		--build-arg BASE=$(REGISTRY)/library/busybox:latest \
		--allow-emulation --insecure-registry \
		--work-dir $(STATE)/work --toolchain $(TOOLCHAIN) \
		--sign-key-file $(SIGNING)/signing.key
	$(BIN)/multiarch verify $(REGISTRY)/examples/hello:latest --key $(SIGNING)/signing.pub

$(SIGNING)/signing.key: | venv
	$(BIN)/multiarch keygen $(SIGNING)

test: deps venv
	$(BIN)/ruff check .
	$(BIN)/pytest --durations=15

# The fault suite alone, recording each scenario; its tables replace docs/reliability.md's.
reliability: deps venv
	mkdir -p $(STATE)
	rm -f $(STATE)/fault-report.jsonl
	MULTIARCH_FAULT_REPORT=$(abspath $(STATE))/fault-report.jsonl $(BIN)/pytest tests/faults
	$(BIN)/python -m tests.faults.report $(STATE)/fault-report.jsonl docs/reliability.md \
		"pytest tests/faults passed"

# etcd, kube-apiserver, controller-manager, scheduler (one binary from tests/cluster/controlplane,
# cached under $(STATE)/controlplane/) and two node agents, on 127.0.0.1 (tests/cluster).
cluster: deps venv
	$(BIN)/python -m tests.cluster up --state-dir $(STATE)/cluster

cluster-down: venv
	$(BIN)/python -m tests.cluster down --state-dir $(STATE)/cluster

gc: venv
	$(BIN)/multiarch gc --work-dir $(STATE)/work

bench: deps venv
	-$(BIN)/pip install -q matplotlib
	PYTHONPATH=. $(BIN)/python -m bench.run

lint: venv
	$(BIN)/ruff check .

format: venv
	$(BIN)/ruff format multiarch flows tasks tests devtools

# Prefect server, work pools, concurrency limits (ARM64_LIMIT=, AMD64_LIMIT=), a process
# worker and prefect.yaml's deployments; state and logs under $(STATE)/ (devtools/serve.py).
# DB=postgres: the server's database is our own PostgreSQL cluster (devtools/postgres.py).
serve: export MULTIARCH_STATE_DIR ?= $(abspath $(STATE))
serve: export MULTIARCH_DB = $(DB)
serve: export MULTIARCH_REGISTRY_PORT = $(PORT)
serve: export PREFECT_BIN ?= $(abspath $(BIN))/prefect
serve: up
	@$(BIN)/python -m devtools serve

stop: export MULTIARCH_STATE_DIR ?= $(abspath $(STATE))
stop:
	@$(BIN)/python -m devtools stop

down:
	-$(BIN)/python -m devtools down --state-dir $(STATE)

clean: down
	rm -rf $(STATE) $(VENV)
