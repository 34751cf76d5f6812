# multiarch-builder: `make demo` for a first build on one machine, `make test` for the suite.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STATE := .local
PORT ?= 5000
REGISTRY := 127.0.0.1:$(PORT)
PYTHON ?= python3

.PHONY: help deps venv up down demo test lint format clean

help:
	@echo "make demo   - install what is missing, start a local registry, build examples/hello for amd64+arm64"
	@echo "make test   - lint and run every test (unit + integration)"
	@echo "make up     - local registry, QEMU emulation and the offline base image only"
	@echo "make down   - stop the local registry"
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
	$(BIN)/multiarch local up --state-dir $(STATE) --port $(PORT)

demo: up
	$(BIN)/multiarch build \
		--image $(REGISTRY)/examples/hello:latest \
		--platform linux/amd64 --platform linux/arm64 \
		--context examples/hello \
		--build-arg BASE=$(REGISTRY)/library/busybox:latest \
		--allow-emulation --insecure-registry \
		--work-dir $(STATE)/work

test: deps venv
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .

format: venv
	$(BIN)/ruff format multiarch flows tasks tests

down:
	-$(BIN)/multiarch local down --state-dir $(STATE)

clean: down
	rm -rf $(STATE) $(VENV)
