# cdp-hub: the two commands that matter are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# How long a channel provider hangs or fails in the fault drills (the full drill: 60 s).
FAULTS_PROVIDER_OUTAGE ?= 20
# Airflow gets an environment of its own (its pins would fight the hub's dev tools), built once and cached
# outside the checkout. Airflow's constraint files are not on PyPI, so the one version is pinned instead.
AIRFLOW_VERSION ?= 3.3.2
AIRFLOW_ENV     ?= $(HOME)/.cache/cdp-hub/airflow-$(AIRFLOW_VERSION)
AIRFLOW_STAMP   := $(AIRFLOW_ENV)/.installed

.PHONY: install airflow-env demo test test-suite test-faults services-up services-down lint typecheck schema bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	@touch $(STAMP)

install: $(STAMP)

$(AIRFLOW_STAMP): pyproject.toml
	@test -x $(AIRFLOW_ENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_ENV)
	$(AIRFLOW_ENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_ENV)/bin/python -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e '.[airflow]' fakeredis
	@touch $(AIRFLOW_STAMP)

## The Airflow environment tests/test_airflow.py runs the provider's DAGs in.
airflow-env: $(AIRFLOW_STAMP)

## The whole pipeline on generated data: in-process bus, embedded PostgreSQL, fakeredis. No servers.
demo: install
	$(BIN)/cdp-hub demo

## Every test, against a real Kafka broker, PostgreSQL and Redis started on loopback. The fault drills
## (tests/test_faults.py, marker `faults`) run as a second pytest process next to the rest of the suite, on
## private services of their own (most of their time is waiting for outages); make fails when either fails.
test: install airflow-env
	@mkdir -p .services
	bash scripts/services.sh up > .services/env
	@rm -f .services/faults.log .services/faults-report.txt; \
	. ./.services/env; \
	CDP_HUB_FAULTS_PROVIDER_OUTAGE=$(FAULTS_PROVIDER_OUTAGE) CDP_HUB_FAULTS_REPORT=$(CURDIR)/.services/faults-report.txt \
		$(BIN)/python -m pytest -m faults -p no:cacheprovider $(PYTEST_ARGS) tests/test_faults.py > .services/faults.log 2>&1 & drills=$$!; \
	echo "== the fault drills run alongside (tests/test_faults.py; output: .services/faults.log)"; \
	CDP_HUB_AIRFLOW_PYTHON=$(AIRFLOW_ENV)/bin/python $(BIN)/python -m pytest -m "not faults" $(PYTEST_ARGS); suite=$$?; \
	wait $$drills; faults=$$?; \
	echo "== the fault drills (tests/test_faults.py):"; cat .services/faults.log; \
	if [ -f .services/faults-report.txt ]; then echo "== fault drill figures:"; cat .services/faults-report.txt; fi; \
	echo "== make test: suite exit $$suite, fault drills exit $$faults"; \
	[ $$suite -eq 0 ] && [ $$faults -eq 0 ]

## Every test except the fault drills (a quicker loop while working).
test-suite: install airflow-env
	@mkdir -p .services
	bash scripts/services.sh up > .services/env
	. ./.services/env && CDP_HUB_AIRFLOW_PYTHON=$(AIRFLOW_ENV)/bin/python $(BIN)/python -m pytest -m "not faults" $(PYTEST_ARGS)

## The fault drills alone; a channel provider hangs or fails for FAULTS_PROVIDER_OUTAGE seconds (the full
## drill: make test-faults FAULTS_PROVIDER_OUTAGE=60).
test-faults: install
	CDP_HUB_FAULTS_PROVIDER_OUTAGE=$(FAULTS_PROVIDER_OUTAGE) $(BIN)/python -m pytest -m faults $(PYTEST_ARGS) tests/test_faults.py

services-up:
	bash scripts/services.sh up

services-down:
	bash scripts/services.sh down

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

schema: install
	$(BIN)/cdp-hub schema export

bench: install
	@mkdir -p .services
	bash scripts/services.sh up > .services/env
	. ./.services/env && for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
