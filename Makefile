# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# A development-only webhook secret so `make run` and `make demo` work out of
# the box. Deployments set their own OFFBOARD_WEBHOOK_SECRET.
export OFFBOARD_WEBHOOK_SECRET ?= whsec_b2ZmYm9hcmQtZGV2LW9ubHktd2ViaG9vay1zZWNyZXQ=

# The adapters' tests run again with the CRM SDKs at the lowest versions pyproject.toml
# allows, in a second environment, so a lower bound that admits a broken release fails.
LOWEST        := .venv-lowest
LOWEST_STAMP  := $(LOWEST)/.installed
LOWEST_SDKS   := hubspot-api-client simple-salesforce
ADAPTER_TESTS := tests/unit/test_hubspot_*.py tests/integration/test_hubspot_*.py \
                 tests/unit/test_salesforce_*.py tests/integration/test_salesforce_*.py \
                 tests/integration/test_cross_crm.py

.PHONY: run test test-lowest demo lint typecheck bench bench-big screenshots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/offboard serve

test: $(STAMP)
	$(BIN)/ruff check connector adapters tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

$(LOWEST_STAMP): pyproject.toml
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST)/bin/python -m pip install --quiet -e '.[test]' $$($(PYTHON) -m tests.lowest $(LOWEST_SDKS))
	touch $(LOWEST_STAMP)

test-lowest: $(LOWEST_STAMP)
	$(LOWEST)/bin/python -m tests.lowest --check $(LOWEST_SDKS)
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider $(wildcard $(ADAPTER_TESTS))

demo: $(STAMP)
	$(BIN)/offboard demo

lint: $(STAMP)
	$(BIN)/ruff check connector adapters tests
	$(BIN)/ruff format --check connector adapters tests

typecheck: $(STAMP)
	$(BIN)/mypy

screenshots: $(STAMP)
	$(BIN)/python -m tests.e2e.screenshots docs/screenshots

# A burst against local CRM fakes beside a one-call-per-record tool and a bare Flask endpoint
# (5 to 10 minutes on 2 cores; OFFBOARD_BENCH_DEALS and the other knobs in tests/bench.py shrink it).
bench: $(STAMP)
	$(BIN)/python -m tests.bench

# The memory run: 5,000 closed deals on SQLite and on Postgres, every process's peak RSS (minutes;
# each burst stops after OFFBOARD_BENCH_BIG_TIMEOUT seconds).
bench-big: $(STAMP)
	OFFBOARD_BENCH_BIG=1 $(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) $(LOWEST) var/*.db
