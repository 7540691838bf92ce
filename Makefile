# Two commands: `make run` starts the whole stack, `make test` runs the whole test suite.
# Both create .venv when missing and (re)install only when pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install bench clean-run strategy-reports

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[test,cluster]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@$(BIN)/trader up

# The tests not marked slow run on two workers (a test file stays on one worker: its fixtures and order are
# kept), the slow ones (whole stacks, chaos runs) one at a time after them; both always run.
test: $(STAMP)
	@$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile --durations=10; fast=$$?; \
	  $(BIN)/python -m pytest -q -m slow --durations=20; slow=$$?; \
	  test $$fast -eq 0 -a $$slow -eq 0

bench: $(STAMP)
	@for b in bus simulator storage orders agent ops dashboard backtest ledger kis_sim; do \
	  test -f bench/$$b.py && $(BIN)/python -m bench.$$b | tail -1; \
	done; true

# docs/strategies/<strategy>.md with its charts: each strategy back-tested in the simulated market and in the null world
strategy-reports: $(STAMP)
	@$(BIN)/python -m backtest.strategy_reports
