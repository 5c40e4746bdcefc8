# Everything a fresh machine with Python 3.11+, make and curl needs: `make local`, `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.8
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/uv/bin/uv)
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
GATEWAY_VENV := $(CURDIR)/.venv-gateway
TOOLS_VENV := $(CURDIR)/.venv-tools
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help uv sync gateway-env tools-env browser local test lint typecheck pytest bench bench-env stages capacity scale scale-env fuzz soak clean

help:
	@echo "make local   run the model server and the gateway on loopback with the demo model"
	@echo "make test    install everything needed and run every test"
	@echo "make bench   benchmarks (writes docs/benchmarks.md)"
	@echo "make stages  the gateways' CPU per request by stage (a section of docs/benchmarks.md)"
	@echo "make capacity  capacity and cost report from the benchmarks (writes docs/capacity.md)"
	@echo "make scale   multi-replica scaling scenarios on loopback (writes docs/scaling.md)"

$(CURDIR)/.tools/uv/bin/uv:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(CURDIR)/.tools/uv uv==$(UV_VERSION)

uv: $(UV)

# Main environment: TensorFlow, the model tooling, the Pulumi program and the dev tools.
sync: uv
	$(UV) sync --frozen

# The gateway's own environment, built from its image's requirements alone: no TensorFlow.
gateway-env: uv
	@test -x $(GATEWAY_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(GATEWAY_VENV)
	$(UV) pip sync --quiet --python $(GATEWAY_VENV)/bin/python services/gateway/requirements.txt

# Static checkers that cannot share an environment with TensorFlow (checkov, hadolint).
tools-env: uv
	@test -x $(TOOLS_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(TOOLS_VENV)
	$(UV) pip sync --quiet --python $(TOOLS_VENV)/bin/python requirements/tools.txt

# Headless Chromium (Debian's package) for the web page's end-to-end test; we are root here and in CI.
browser:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y --no-install-recommends chromium)

local: sync gateway-env
	$(UV) run --frozen python scripts/local_stack.py

lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: sync
	$(UV) run --frozen mypy

pytest: sync gateway-env tools-env browser scale-env
	$(UV) run --frozen pytest

test: lint typecheck pytest

# The seed gateway's environment (Flask + TensorFlow), the benchmarks' baseline, and wrk (Debian).
bench-env: uv
	@test -x $(CURDIR)/.venv-seed/bin/python || $(UV) venv --quiet --python $(PYTHON) $(CURDIR)/.venv-seed
	$(UV) pip sync --quiet --python $(CURDIR)/.venv-seed/bin/python benchmarks/requirements-seed.txt
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y --no-install-recommends wrk)

bench: sync gateway-env bench-env
	$(UV) run --frozen python -m benchmarks

# The gateways' CPU per request, stage by stage, at 1, 8 and 32 clients (its own section of
# docs/benchmarks.md, which `make bench` keeps).
stages: sync gateway-env bench-env
	$(UV) run --frozen python -m benchmarks.stages --py-spy 10 --output docs/benchmarks.md

# Replicas, nodes and monthly cost (EKS against Lambda) from docs/benchmarks.md's measured CPU,
# the infra program's declared sizes (run under Pulumi's mocks) and benchmarks/prices.toml.
capacity: sync
	$(UV) run --frozen python -m benchmarks.capacity

# haproxy (the NLB of the local multi-replica stack) and wrk, both Debian packages.
scale-env:
	@test -x /usr/sbin/haproxy || (apt-get update && apt-get install -y --no-install-recommends haproxy)
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y --no-install-recommends wrk)

# Gateway concurrency (one gateway, slow image host), then the scaling scenarios (docs/scaling.md).
scale: sync gateway-env scale-env
	$(UV) run --frozen python -m benchmarks.scaling.concurrency
	$(UV) run --frozen python -m benchmarks.scaling.warmup
	$(UV) run --frozen python -m benchmarks.scaling

# Schemathesis on the OpenAPI document, many more examples than `make test` (writes docs/reliability.md).
fuzz: sync gateway-env
	RELIABILITY_FUZZ_EXAMPLES=$${RELIABILITY_FUZZ_EXAMPLES:-400} $(UV) run --frozen pytest -q tests/reliability/test_schema_fuzz.py
	$(UV) run --frozen python -m tests.reliability.report

# The reliability suite with a 10-minute soak and 2 minutes of decompression bombs in a memory
# cgroup (loopback only; writes docs/reliability.md).
soak: sync gateway-env
	RELIABILITY_SOAK_SECONDS=$${RELIABILITY_SOAK_SECONDS:-600} RELIABILITY_MEMORY_SECONDS=$${RELIABILITY_MEMORY_SECONDS:-120} $(UV) run --frozen pytest -q --timeout=1500 tests/reliability
	$(UV) run --frozen python -m tests.reliability.report

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
