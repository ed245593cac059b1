##@ Container image (Docker)
# With a normal Docker install:   make docker-build docker-run
# Without a registry / engine (CI, sandboxes), as root:
#   make docker-build docker-run DOCKER_OFFLINE=1
# starts a private dockerd (scripts/docker/dockerd-up.sh) and builds on a debootstrap
# stand-in for python:3.11-slim (scripts/docker/build-base.sh); `make docker-down` stops it.
DOCKER ?= docker
IMAGE ?= catsdogs-api
DOCKER_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TAG ?= $(DOCKER_VERSION)
# The Dockerfile's pinned default (one place to move it forward).
BASE_IMAGE ?= $(shell sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
CONTAINER ?= catsdogs-api
DOCKER_PORT ?= 8000
DOCKER_BIND ?= 127.0.0.1
DOCKER_OFFLINE ?= 0
DOCKER_BUILD_ARGS ?=
DOCKER_RUN_ARGS ?=

DOCKER_REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DOCKER_CREATED := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
DOCKER_PREREQS :=
DOCKER_DAEMON :=
# bridge networking publishes the port; host networking (the private daemon has no
# bridge) moves the server itself to DOCKER_BIND:DOCKER_PORT.
DOCKER_NET_ARGS = -p $(DOCKER_BIND):$(DOCKER_PORT):8000

ifeq ($(DOCKER_OFFLINE),1)
CATSDOGS_DOCKER_ROOT ?= /var/tmp/catsdogs-docker
export DOCKER_HOST := unix://$(CATSDOGS_DOCKER_ROOT)/docker.sock
export DOCKER_BUILDKIT ?= 0
BASE_IMAGE := catsdogs-base:bookworm
DOCKER_BUILD_ARGS += --network host
DOCKER_NET_ARGS = --network host -e CATSDOGS_HOST=$(DOCKER_BIND) -e CATSDOGS_PORT=$(DOCKER_PORT)
DOCKER_PREREQS := docker-base
DOCKER_DAEMON := docker-up
endif

.PHONY: docker-up docker-down docker-base docker-build docker-run docker-stop docker-logs docker-lint test-docker bench-image
docker-up: ## Start the private Docker daemon (root; no bridge/iptables) used by DOCKER_OFFLINE=1
	scripts/docker/dockerd-up.sh >/dev/null

docker-down: ## Stop the private Docker daemon and unmount what it left
	scripts/docker/dockerd-down.sh

docker-base: docker-up ## Build (or load from cache) the offline stand-in base image catsdogs-base:bookworm
	scripts/docker/build-base.sh

docker-build: $(DOCKER_PREREQS) ## Build the serving image IMAGE:TAG (catsdogs-api:<version>; BASE_IMAGE=..., DOCKER_OFFLINE=1)
	$(DOCKER) build $(DOCKER_BUILD_ARGS) \
		--build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg VERSION=$(DOCKER_VERSION) \
		--build-arg REVISION=$(DOCKER_REVISION) \
		--build-arg CREATED=$(DOCKER_CREATED) \
		-t $(IMAGE):$(TAG) -t $(IMAGE):latest .
	@$(DOCKER) image inspect --format 'image $(IMAGE):$(TAG): {{.Size}} bytes' $(IMAGE):$(TAG)

docker-run: $(DOCKER_DAEMON) docker-stop ## Run the image detached (container catsdogs-api, 127.0.0.1:8000, read-only root fs)
	$(DOCKER) run -d --name $(CONTAINER) --read-only --tmpfs /tmp $(DOCKER_NET_ARGS) $(DOCKER_RUN_ARGS) $(IMAGE):$(TAG)
	@echo "API on http://$(DOCKER_BIND):$(DOCKER_PORT) (make docker-logs, make docker-stop)"

docker-stop: $(DOCKER_DAEMON) ## Stop and remove the container started by docker-run
	-@$(DOCKER) rm -f $(CONTAINER) >/dev/null 2>&1 || true

docker-logs: $(DOCKER_DAEMON) ## Follow the logs of the docker-run container
	$(DOCKER) logs -f $(CONTAINER)

# The container's PID 1 is a host process too: its tree gives the server's CPU and memory, as for a local server.
bench-image: init bench-peers-venv ## make bench with the running docker-run container as catsdogs (peers, baseline, bound as make bench)
	@pid=$$($(DOCKER) inspect -f '{{.State.Pid}}' $(CONTAINER) 2>/dev/null) && [ "$$pid" != 0 ] || \
		{ echo "no running container $(CONTAINER): make docker-build docker-run first (DOCKER_OFFLINE=1 here)" >&2; exit 2; }; \
	set -x; $(PY) scripts/bench.py --url http://$(DOCKER_BIND):$(DOCKER_PORT) --server-pid $$pid \
		$(if $(MODEL),--model $(MODEL)) $(BENCH_ARGS)

docker-lint: init ## hadolint the Dockerfile, shellcheck scripts/docker (apt-get install -y shellcheck)
	$(BIN)/hadolint Dockerfile
	shellcheck -x scripts/docker/*.sh

test-docker: init ## Build the real image on the stand-in base, run it, test it (root, docker.io, debootstrap)
	$(BIN)/pytest -q -m docker tests/docker
