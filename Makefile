# overlay: `make dev` brings the local stack up, `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# With NVIDIA GPUs on the host, each agent gets GPUs of its own: deploy/gpu_split.py
# writes the override (see docs/deploy.md, "GPUs under make up").
GPU_OVERRIDE := var/docker-compose.gpu.yml
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
COMPOSE := $(strip docker compose --env-file deploy/.env -f deploy/docker-compose.yml $(if $(HAS_GPU),-f $(GPU_OVERRIDE)))
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install services migrate dev test lint up logs down bench clean deploy/.env $(GPU_OVERRIDE)

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

# The stack's secrets (API tokens, Postgres and Redis passwords, Flower's login), random,
# written once and kept out of git and the image; an older file gets the keys it lacks.
deploy/.env:
	@$(PYTHON) deploy/stack_env.py $@

$(GPU_OVERRIDE):
	@mkdir -p $(@D)
	$(PYTHON) deploy/gpu_split.py agent-a agent-b > $@

# One image (overlay:dev) is built, by the api service, and run by every overlay service;
# the image it replaces is removed rather than left untagged.
up: deploy/.env $(if $(HAS_GPU),$(GPU_OVERRIDE))
	$(COMPOSE) up --build -d
	@docker image prune -f --filter label=org.opencontainers.image.title=overlay >/dev/null
	@echo "overlay is up; make logs follows it, make down stops it."
	@echo "  API     http://localhost:$${OVERLAY_API_PORT:-8000}  (tokens: OVERLAY_API_TOKEN, OVERLAY_ADMIN_TOKEN in deploy/.env)"
	@echo "  agents  http://localhost:$${OVERLAY_AGENT_A_PORT:-8001}/health  http://localhost:$${OVERLAY_AGENT_B_PORT:-8002}/health"
	@echo "  Flower  http://localhost:$${OVERLAY_FLOWER_PORT:-5555}  (login: FLOWER_BASIC_AUTH, user:password, in deploy/.env)"
	@echo "  Postgres and Redis: on the compose network only; their passwords are in deploy/.env"

logs: deploy/.env $(if $(HAS_GPU),$(GPU_OVERRIDE))
	$(COMPOSE) logs -f

down: deploy/.env $(if $(HAS_GPU),$(GPU_OVERRIDE))
	$(COMPOSE) down

clean:
	rm -rf $(VENV) var *.egg-info

# Side-by-side benchmark against the raw-Celery floor, every issue-17 figure with its target;
# BENCH_ARGS=--quick for a short run. Keeps each run under bench/results/.
bench: install services
	timeout 3600 $(BIN)/python -m bench.run $(BENCH_ARGS)
