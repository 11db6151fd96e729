# overlay: `make dev` brings the local stack up, `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# With an NVIDIA GPU on the host, the agents get it (deploy/docker-compose.gpu.yml).
GPU_COMPOSE := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo -f deploy/docker-compose.gpu.yml)
COMPOSE := docker compose --env-file deploy/.env -f deploy/docker-compose.yml $(GPU_COMPOSE)
# The stack's API tokens, random, written once and kept out of git (see README, "Tokens").
TOKEN = $$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install services migrate dev test lint up logs down bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

services:
	deploy/local-services.sh

migrate: install services
	$(BIN)/python -m web.bootstrap

dev: migrate
	@mkdir -p var/logs
	$(BIN)/python deploy/procs.py deploy/Procfile

test: install services
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

deploy/.env:
	umask 077; printf 'OVERLAY_API_TOKEN=%s\nOVERLAY_ADMIN_TOKEN=%s\n' "$(TOKEN)" "$(TOKEN)" > $@
	@echo "wrote random API tokens to $@"

up: deploy/.env
	$(COMPOSE) up --build -d

logs: deploy/.env
	$(COMPOSE) logs -f

down: deploy/.env
	$(COMPOSE) down

clean:
	rm -rf $(VENV) var *.egg-info

# Side-by-side benchmark against the raw-Celery floor; BENCH_ARGS=--quick for a short run.
bench: install services
	timeout 600 $(BIN)/python -m bench.run $(BENCH_ARGS)
