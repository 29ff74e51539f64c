# The two commands a new user runs are `make demo` and `make test`; both build their own
# virtualenv from scratch (uv, installed into it by pip, does the resolving quickly).
#
#   make demo                  example DAG waiting for simulated pods on a throw-away Airflow
#   make test                  the whole suite (unit, simulator over HTTP, end-to-end Airflow)
#   make test-fast             the inner loop: unit and simulator-over-HTTP tests, no Airflow processes
#   make lint                  ruff + mypy --strict
#   make bench                 the performance benchmark, results to docs/benchmarks.md
#   make test-lowest           the suite on the lowest supported Airflow and Python
#   make test-model            the long run of the lifecycle's model test (tests/model), random seeds
#   make docs                  build the documentation site (mkdocs --strict) into site/
#   make ci                    what .ci/run does: lint, docs, newest and lowest

# Newest Airflow this release is tested on, and the lowest it supports (see pyproject.toml).
AIRFLOW_VERSION ?= 3.3.2
LOWEST_AIRFLOW_VERSION ?= 3.1.0
# The lowest Airflow is installed with dependencies as they were at its release, which is what
# its own constraint file pins (newer structlog, for one, breaks Airflow 3.1.0).
LOWEST_EXCLUDE_NEWER ?= 2025-10-01
PYTHON_VERSION ?=
PYTHON ?= $(if $(PYTHON_VERSION),$(shell scripts/find-python $(PYTHON_VERSION)),python3)
VENV ?= .venv
EXCLUDE_NEWER ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)

.PHONY: demo test test-fast lint docs bench test-lowest test-model ci clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python \
		$(if $(EXCLUDE_NEWER),--exclude-newer $(EXCLUDE_NEWER)) \
		"apache-airflow==$(AIRFLOW_VERSION)" -e ".[dev]"
	touch $@

demo: $(STAMP)
	$(BIN)/python -m scripts.demo

# UV_EXCLUDE_NEWER: what tests install with uv (the packaging test's build backend) is of the same era.
test: $(STAMP)
	$(if $(EXCLUDE_NEWER),UV_EXCLUDE_NEWER=$(EXCLUDE_NEWER) )$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: everything that needs no Airflow process, browser or packaging build.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e and not ha and not browser and not slow" $(PYTEST_ARGS)

# The model test of the pod lifecycle, long: PRIME_MODEL_EXAMPLES examples of PRIME_MODEL_STEPS steps,
# random seeds, shrinking (make test runs a bounded, derandomized profile of it). Prints how many steps
# it checked. PRIME_MODEL_TOLERATE="#shared-name,..." surveys past known bugs (tests/model/machine.py).
PRIME_MODEL_EXAMPLES ?= 300
PRIME_MODEL_STEPS ?= 50
test-model: $(STAMP)
	PRIME_MODEL_EXAMPLES=$(PRIME_MODEL_EXAMPLES) PRIME_MODEL_STEPS=$(PRIME_MODEL_STEPS) \
		$(BIN)/python -m pytest tests/model -p no:cacheprovider -q -s $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check airflow_provider_prime tests bench example_dags scripts
	$(BIN)/ruff format --check airflow_provider_prime tests bench example_dags scripts
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python -m bench.triggers

test-lowest:
	$(MAKE) test VENV=.venv-lowest PYTHON_VERSION=3.10 AIRFLOW_VERSION=$(LOWEST_AIRFLOW_VERSION) \
		EXCLUDE_NEWER=$(LOWEST_EXCLUDE_NEWER)

ci:
	$(MAKE) lint PYTHON_VERSION=3.13
	$(MAKE) docs PYTHON_VERSION=3.13
	$(MAKE) test PYTHON_VERSION=3.13
	$(MAKE) test-lowest

clean:
	rm -rf .venv .venv-lowest build dist site .mypy_cache .ruff_cache .pytest_cache

# N jobs x M nodes tailed from one event loop, ours against the SSH provider's trigger (~5 min; docs/benchmarks.md)
bench-jobs: $(STAMP)
	$(BIN)/python -m bench.jobs
