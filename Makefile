# feedvault: `make demo` and `make test` work from a fresh checkout with only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEV    := $(VENV)/.installed-dev
DEMO   := $(VENV)/.installed-demo
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: test demo bench soak lint typecheck docs unit test-unit test-integration test-e2e clean image image-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEV): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev,demo]'
	touch $@

$(DEMO): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[demo,lake]'
	touch $@

## test: lint, type-check, the docs site and the whole test suite (installs what it needs)
test: $(DEV) lint typecheck docs unit

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(DEV)
	$(BIN)/mypy

## docs: the documentation site (docs/, mkdocs.yml), built strictly (a broken link fails) into site/
docs: $(DEV)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Two workers: most end-to-end tests wait on real time (deadlines, grace periods), so two of
# them side by side halve the wall time on a 2-core machine.
unit: $(DEV)
	$(BIN)/python -m pytest -q -n 2

## test-unit, test-integration, test-e2e: one tier of the suite (tests/conftest.py says which)
test-unit test-integration test-e2e: test-%: $(DEV)
	$(BIN)/python -m pytest -q -n 2 -m $*

## demo: fake exchange + embedded S3 server + engine + verify + one feedvault query, on loopback
demo: $(DEMO)
	$(BIN)/feedvault demo

## bench: the figures of docs/load-testing.md from one run, all 20 stop moments, the 45 s S3 hold, the stop under
## CPU-burning load (20 repetitions of the stop and backpressure tests) and the 10-minute soak
bench: $(DEV)
	$(BIN)/python -m benchmarks --repeat 3
	FEEDVAULT_STOP_MOMENTS=all $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_stop_moments.py
	FEEDVAULT_BENCH=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_backpressure.py -k held
	FEEDVAULT_BENCH=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_books_e2e.py tests/test_books_capture_replay_e2e.py
	$(BIN)/python -m benchmarks.stress_stop --repetitions 20 --all-moments
	$(BIN)/python -m benchmarks.soak

## soak: a 10-minute feedvault loadtest at 20,000 trades/s; RSS must stay flat (bench-output/soak/)
soak: $(DEV)
	$(BIN)/python -m benchmarks.soak

## image: the container image (Dockerfile) with docker, or podman where no Docker daemon runs
IMAGE      ?= feedvault:latest
BASE_IMAGE ?= python:3.11-slim
CONTAINER_ENGINE ?= $(shell docker info >/dev/null 2>&1 && echo docker || command -v podman 2>/dev/null)
image:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image: needs docker (with its daemon) or podman" >&2; exit 1; }
	$(CONTAINER_ENGINE) build --build-arg BASE_IMAGE=$(BASE_IMAGE) $(IMAGE_BUILD_FLAGS) -t $(IMAGE) .

## image-test: build the image with podman (on a local stand-in base) and run stream + batch in it
image-test: $(DEV)
	$(BIN)/python deploy/image/image_test.py

clean:
	rm -rf $(VENV) demo-output bench-output site .pytest_cache .mypy_cache .ruff_cache
