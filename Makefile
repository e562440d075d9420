# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# A development-only webhook secret so `make run` and `make demo` work out of
# the box. Deployments set their own OFFBOARD_WEBHOOK_SECRET.
export OFFBOARD_WEBHOOK_SECRET ?= whsec_b2ZmYm9hcmQtZGV2LW9ubHktd2ViaG9vay1zZWNyZXQ=

.PHONY: run test demo lint typecheck bench screenshots clean

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

demo: $(STAMP)
	$(BIN)/offboard demo

lint: $(STAMP)
	$(BIN)/ruff check connector adapters tests
	$(BIN)/ruff format --check connector adapters tests

typecheck: $(STAMP)
	$(BIN)/mypy

screenshots: $(STAMP)
	$(BIN)/python -m tests.e2e.screenshots docs/screenshots

bench: $(STAMP)
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) var/*.db
