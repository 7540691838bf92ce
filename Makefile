# Two commands: `make run` starts the whole stack, `make test` runs the whole test suite.
# Both create .venv when missing and (re)install only when pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install bench clean-run

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@$(BIN)/trader up

test: $(STAMP)
	@$(BIN)/python -m pytest -q

bench: $(STAMP)
	@for b in bus simulator storage orders agent ops dashboard backtest ledger kis_sim; do \
	  test -f bench/$$b.py && $(BIN)/python -m bench.$$b | tail -1; \
	done; true
